// SPDX-License-Identifier: Apache-2.0
// A C# consumer (and producer) of bips pools, through P/Invoke over the C API (Bips.cs).
//
//   mono csharp_consumer.exe consume NAME N [WAIT_S=10]
//       attaches to pool NAME and receives N frames, then expects the end of the stream. Frame i
//       must hold byte (i + k) % 251 at offset k and the metadata "frame i"; each frame is
//       printed as one line: "frame SEQ TIMESTAMP_NS NBYTES SHAPE DTYPE META".
//   mono csharp_consumer.exe produce NAME N [WAIT_S=10]
//       creates pool NAME of (32, 48, 3) uint8 frames, waits for a first consumer, publishes N
//       frames of that content stamped 1000 * (i + 1) ns, and closes.
//
// Exit status: 0 when every frame was as expected, 1 otherwise (with the reason on stderr).
using System;
using System.Text;
using System.Threading;
using Bips;

static class Program
{
    static byte[] Expected(long seq, long n)
    {
        var bytes = new byte[n];
        for (long k = 0; k < n; ++k)
            bytes[k] = (byte)((seq + k) % 251);
        return bytes;
    }

    static int Consume(string name, int n, double waitSeconds)
    {
        using (var consumer = new Consumer(name, waitSeconds))
        {
            Console.WriteLine("attached to '" + name + "'");
            for (int i = 0; i < n; ++i)
            {
                using (var frame = consumer.Receive(10))
                {
                    if (frame == null)
                    {
                        Console.Error.WriteLine("the stream ended after " + i + " frames");
                        return 1;
                    }
                    byte[] data = frame.ToArray();
                    string meta = Encoding.UTF8.GetString(frame.Meta);
                    if (!frame.Intact)
                    {
                        Console.Error.WriteLine("frame " + frame.Seq + " was reused while read");
                        return 1;
                    }
                    byte[] want = Expected((long)frame.Seq, data.Length);
                    for (int k = 0; k < data.Length; ++k)
                    {
                        if (data[k] != want[k])
                        {
                            Console.Error.WriteLine("frame " + frame.Seq + ": byte " + k + " is " + data[k] +
                                                    ", expected " + want[k]);
                            return 1;
                        }
                    }
                    if (meta != "frame " + frame.Seq)
                    {
                        Console.Error.WriteLine("frame " + frame.Seq + ": metadata '" + meta + "'");
                        return 1;
                    }
                    Console.WriteLine("frame {0} {1} {2} {3} {4} {5}", frame.Seq, frame.TimestampNs,
                                      frame.NBytes, string.Join("x", frame.Shape),
                                      Native.DtypeName(frame.Dtype), meta);
                }
            }
            if (consumer.Receive(10) != null)
            {
                Console.Error.WriteLine("more frames than expected");
                return 1;
            }
            Console.WriteLine("end of stream; received " + consumer.Stats.Received + " frames");
        }
        return 0;
    }

    static int Produce(string name, int n, double waitSeconds)
    {
        var shape = new long[] { 32, 48, 3 };
        using (var producer = new Producer(name, 4, shape, 32))
        {
            Console.WriteLine("pool '" + name + "' ready");
            var deadline = DateTime.UtcNow.AddSeconds(waitSeconds);
            while (producer.Stats.Consumers == 0)
            {
                if (DateTime.UtcNow >= deadline)
                {
                    Console.Error.WriteLine("no consumer attached within " + waitSeconds + " s");
                    return 1;
                }
                Thread.Sleep(5);
            }
            for (int i = 0; i < n; ++i)
                producer.Publish(Expected(i, 32 * 48 * 3), 1000L * (i + 1),
                                 Encoding.UTF8.GetBytes("frame " + i), 10);
            producer.Close();
            Console.WriteLine("published " + producer.Stats.Published + " frames");
        }
        return 0;
    }

    static int Main(string[] args)
    {
        if (args.Length < 3 || (args[0] != "consume" && args[0] != "produce"))
        {
            Console.Error.WriteLine("usage: csharp_consumer.exe consume|produce NAME N [WAIT_S]");
            return 2;
        }
        double wait = args.Length > 3 ? double.Parse(args[3]) : 10;
        try
        {
            int n = int.Parse(args[2]);
            return args[0] == "consume" ? Consume(args[1], n, wait) : Produce(args[1], n, wait);
        }
        catch (BipsException e)
        {
            Console.Error.WriteLine("error: " + e.Message);
            return 1;
        }
    }
}
