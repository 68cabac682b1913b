// SPDX-License-Identifier: Apache-2.0
// bips from C#: P/Invoke declarations over the C API (bips.h, see docs/c.md) and thin IDisposable
// wrappers that turn status codes into exceptions. The functions live in libbips_c.so, the C API
// as a shared library (built by this example's CMakeLists.txt).
using System;
using System.Runtime.InteropServices;

namespace Bips
{
    /// A failed call: Status is the bips_status, Message the library's message.
    public class BipsException : Exception
    {
        public readonly int Status;
        public BipsException(int status, string what)
            : base(what + ": " + Native.StatusName(status) + ": " + Native.LastErrorMessage())
        {
            Status = status;
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct ProducerOptions
    {
        public uint Capacity;
        public uint MaxConsumers;
        public UIntPtr BufferSize;
        public UIntPtr MetaSize;
        public uint Ndim;
        [MarshalAs(UnmanagedType.ByValArray, SizeConst = Native.MaxDims)]
        public long[] Shape;
        public int Dtype;
        public int Policy;
        public uint Mode;
        public int AdaptiveSpin;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct ConsumerOptions
    {
        public long WaitNs;
        public long SpinNs;
        public long Owner;
        public int Latest;
        public int Reconnect;
        public int AdaptiveSpin;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct ProducerStats
    {
        public ulong Published, Dropped;
        public uint Capacity, Free, InFlight, Consumers;
        public ulong AcquireWaits, AcquireWaitNs;
        public ulong Spins, Sleeps;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct ConsumerStats
    {
        public ulong Received, Dropped, Skipped;
        public uint Queued, Held, Slot;
        public ulong Reconnects;
        public ulong Spins, Sleeps;
    }

    /// The C functions, one to one. Handles are IntPtr; size_t is UIntPtr.
    public static class Native
    {
        const string Lib = "bips_c";
        public const int MaxDims = 8;

        public const int OK = 0;
        public const int ErrTimeout = 1;
        public const int ErrProducerGone = 5;
        public const int DtypeUInt8 = 0x0108;
        public const long TimestampNow = -1;

        [DllImport(Lib)] static extern IntPtr bips_status_name(int status);
        [DllImport(Lib)] static extern IntPtr bips_last_error_message();
        [DllImport(Lib)] static extern IntPtr bips_version();
        [DllImport(Lib)] static extern IntPtr bips_dtype_name(int dtype);

        [DllImport(Lib)] public static extern void bips_producer_options_init(ref ProducerOptions o);
        [DllImport(Lib)] public static extern void bips_consumer_options_init(ref ConsumerOptions o);

        [DllImport(Lib)]
        public static extern int bips_producer_create(string name, ref ProducerOptions o, out IntPtr producer);
        [DllImport(Lib)]
        public static extern int bips_producer_acquire(IntPtr producer, long timeoutNs, out IntPtr buffer);
        [DllImport(Lib)]
        public static extern int bips_producer_publish(IntPtr producer, IntPtr buffer, long timestampNs,
                                                       byte[] meta, UIntPtr metaLen);
        [DllImport(Lib)] public static extern int bips_producer_get_stats(IntPtr producer, out ProducerStats s);
        [DllImport(Lib)] public static extern int bips_producer_close(IntPtr producer);
        [DllImport(Lib)] public static extern void bips_producer_free(IntPtr producer);
        [DllImport(Lib)] public static extern IntPtr bips_buffer_data(IntPtr buffer);
        [DllImport(Lib)] public static extern UIntPtr bips_buffer_nbytes(IntPtr buffer);
        [DllImport(Lib)] public static extern void bips_buffer_discard(IntPtr buffer);

        [DllImport(Lib)]
        public static extern int bips_consumer_open(string name, ref ConsumerOptions o, out IntPtr consumer);
        [DllImport(Lib)]
        public static extern int bips_consumer_receive(IntPtr consumer, long timeoutNs, out IntPtr frame);
        [DllImport(Lib)] public static extern int bips_consumer_get_stats(IntPtr consumer, out ConsumerStats s);
        [DllImport(Lib)] public static extern void bips_consumer_free(IntPtr consumer);
        [DllImport(Lib)] public static extern IntPtr bips_frame_data(IntPtr frame);
        [DllImport(Lib)] public static extern UIntPtr bips_frame_nbytes(IntPtr frame);
        [DllImport(Lib)] public static extern ulong bips_frame_seq(IntPtr frame);
        [DllImport(Lib)] public static extern long bips_frame_timestamp_ns(IntPtr frame);
        [DllImport(Lib)] public static extern UIntPtr bips_frame_ndim(IntPtr frame);
        [DllImport(Lib)] public static extern IntPtr bips_frame_shape(IntPtr frame);
        [DllImport(Lib)] public static extern int bips_frame_dtype(IntPtr frame);
        [DllImport(Lib)] public static extern IntPtr bips_frame_meta(IntPtr frame);
        [DllImport(Lib)] public static extern UIntPtr bips_frame_meta_size(IntPtr frame);
        [DllImport(Lib)] public static extern int bips_frame_intact(IntPtr frame);
        [DllImport(Lib)] public static extern void bips_frame_release(IntPtr frame);

        // The library's strings are static or per-thread: copied at once, never freed here.
        public static string StatusName(int status) { return Marshal.PtrToStringAnsi(bips_status_name(status)); }
        public static string LastErrorMessage() { return Marshal.PtrToStringAnsi(bips_last_error_message()); }
        public static string Version() { return Marshal.PtrToStringAnsi(bips_version()); }
        public static string DtypeName(int dtype) { return Marshal.PtrToStringAnsi(bips_dtype_name(dtype)); }

        public static void Check(int status, string what)
        {
            if (status != OK)
                throw new BipsException(status, what);
        }
    }

    /// A received frame: read-only shared memory until Dispose() gives it back.
    public sealed class Frame : IDisposable
    {
        IntPtr m_handle;
        internal Frame(IntPtr handle) { m_handle = handle; }

        public ulong Seq { get { return Native.bips_frame_seq(Handle); } }
        public long TimestampNs { get { return Native.bips_frame_timestamp_ns(Handle); } }
        public int Dtype { get { return Native.bips_frame_dtype(Handle); } }
        public long NBytes { get { return (long)Native.bips_frame_nbytes(Handle).ToUInt64(); } }

        public long[] Shape
        {
            get
            {
                var shape = new long[(int)Native.bips_frame_ndim(Handle).ToUInt64()];
                if (shape.Length > 0)
                    Marshal.Copy(Native.bips_frame_shape(Handle), shape, 0, shape.Length);
                return shape;
            }
        }

        /// A copy of the frame's bytes (the frame itself stays in shared memory).
        public byte[] ToArray()
        {
            var bytes = new byte[NBytes];
            Marshal.Copy(Native.bips_frame_data(Handle), bytes, 0, bytes.Length);
            return bytes;
        }

        public byte[] Meta
        {
            get
            {
                var meta = new byte[(int)Native.bips_frame_meta_size(Handle).ToUInt64()];
                if (meta.Length > 0)
                    Marshal.Copy(Native.bips_frame_meta(Handle), meta, 0, meta.Length);
                return meta;
            }
        }

        /// True while the producer has not reused the buffer: check after reading.
        public bool Intact { get { return Native.bips_frame_intact(Handle) != 0; } }

        IntPtr Handle
        {
            get
            {
                if (m_handle == IntPtr.Zero)
                    throw new ObjectDisposedException("Frame");
                return m_handle;
            }
        }

        public void Dispose()
        {
            Native.bips_frame_release(m_handle);
            m_handle = IntPtr.Zero;
        }
    }

    public sealed class Consumer : IDisposable
    {
        IntPtr m_handle;

        /// Attaches to pool `name`, waiting up to `waitSeconds` for it.
        public Consumer(string name, double waitSeconds)
        {
            var o = new ConsumerOptions();
            Native.bips_consumer_options_init(ref o);
            o.WaitNs = (long)(waitSeconds * 1e9);
            Native.Check(Native.bips_consumer_open(name, ref o, out m_handle), "open '" + name + "'");
        }

        /// The next frame; null once the producer is gone and everything was received.
        /// Throws BipsException (ErrTimeout after `timeoutSeconds`).
        public Frame Receive(double timeoutSeconds)
        {
            IntPtr frame;
            int status = Native.bips_consumer_receive(m_handle, (long)(timeoutSeconds * 1e9), out frame);
            if (status == Native.ErrProducerGone)
                return null;
            Native.Check(status, "receive");
            return new Frame(frame);
        }

        public ConsumerStats Stats
        {
            get
            {
                ConsumerStats s;
                Native.Check(Native.bips_consumer_get_stats(m_handle, out s), "stats");
                return s;
            }
        }

        public void Dispose()
        {
            Native.bips_consumer_free(m_handle);
            m_handle = IntPtr.Zero;
        }
    }

    public sealed class Producer : IDisposable
    {
        IntPtr m_handle;

        /// Creates pool `name` of `capacity` buffers holding uint8 frames of `shape`.
        public Producer(string name, uint capacity, long[] shape, int metaSize)
        {
            var o = new ProducerOptions();
            o.Shape = new long[Native.MaxDims];
            Native.bips_producer_options_init(ref o);
            o.Capacity = capacity;
            o.Ndim = (uint)shape.Length;
            Array.Copy(shape, o.Shape, shape.Length);
            o.Dtype = Native.DtypeUInt8;
            o.MetaSize = new UIntPtr((ulong)metaSize);
            Native.Check(Native.bips_producer_create(name, ref o, out m_handle), "create '" + name + "'");
        }

        public ProducerStats Stats
        {
            get
            {
                ProducerStats s;
                Native.Check(Native.bips_producer_get_stats(m_handle, out s), "stats");
                return s;
            }
        }

        /// Acquires a buffer, copies `data` into it and publishes it with `timestampNs` and `meta`.
        public void Publish(byte[] data, long timestampNs, byte[] meta, double timeoutSeconds)
        {
            IntPtr buffer;
            Native.Check(Native.bips_producer_acquire(m_handle, (long)(timeoutSeconds * 1e9), out buffer),
                         "acquire");
            if ((long)Native.bips_buffer_nbytes(buffer).ToUInt64() < data.Length)
            {
                Native.bips_buffer_discard(buffer);
                throw new ArgumentException("data is larger than a frame");
            }
            Marshal.Copy(data, 0, Native.bips_buffer_data(buffer), data.Length);
            // publish takes the buffer whatever it returns
            Native.Check(Native.bips_producer_publish(m_handle, buffer, timestampNs, meta,
                                                      new UIntPtr((ulong)meta.Length)),
                         "publish");
        }

        /// End of stream: consumers drain what is queued, then see the producer gone.
        public void Close() { Native.Check(Native.bips_producer_close(m_handle), "close"); }

        public void Dispose()
        {
            Native.bips_producer_free(m_handle);
            m_handle = IntPtr.Zero;
        }
    }
}
