// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <stdexcept>
#include <string>

namespace bips {

/// Base of every bips domain error. OS failures are std::system_error instead (errno kept).
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A blocking call ran out of time.
class Timeout : public Error {
public:
    using Error::Error;
};

/// No pool of that name exists (and the caller did not wait, or waited in vain).
class PoolNotFound : public Error {
public:
    using Error::Error;
};

/// The segment is a bips pool of another layout version, or was made with other parameters.
class IncompatiblePool : public Error {
public:
    using Error::Error;
};

/// The segment under the pool's name is not a valid pool (garbage, truncated, inconsistent).
class CorruptPool : public Error {
public:
    using Error::Error;
};

/// The producer closed or died and everything it published has been received.
class ProducerGone : public Error {
public:
    using Error::Error;
};

/// A live producer already owns the pool's name.
class PoolBusy : public Error {
public:
    using Error::Error;
};

/// Every consumer slot of the pool is taken by a live consumer.
class TooManyConsumers : public Error {
public:
    using Error::Error;
};

/// A blocking call gave up because the process's interrupt check asked it to (see
/// set_interrupt_check in bips/interrupt.hpp).
class Interrupted : public Error {
public:
    using Error::Error;
};

/// GPU pools cannot be used here: no CUDA driver (libcuda.so.1), no device, a device that
/// cannot share memory as file descriptors, or the pool's GPU is not visible to this process.
/// Host pools are unaffected.
class DeviceUnavailable : public Error {
public:
    using Error::Error;
};

/// A CUDA driver call failed; the message names the call and the CUDA error.
class DeviceError : public Error {
public:
    using Error::Error;
};

/// A bad argument: invalid pool name, shape that does not fit, unknown dtype, closed handle...
class InvalidArgument : public Error {
public:
    using Error::Error;
};

} // namespace bips
