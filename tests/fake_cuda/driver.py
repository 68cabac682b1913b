# SPDX-License-Identifier: Apache-2.0
"""ctypes bindings of the fake CUDA driver (libbips_fake_cuda.so), for tests that drive it directly:
tests/test_fake_cuda.py, and GPU-pool tests that need a slow "kernel" or the leak counters.

    cu = load(path)            # ctypes.CDLL with every prototype declared
    check(rc, "what")          # raises CudaError(rc) unless rc == SUCCESS
    prop = alloc_prop(device)  # a CUmemAllocationProp for a POSIX-fd-shareable device allocation
    access(device, flags)      # a CUmemAccessDesc
    ptr, size = ...            # device pointers are plain ints (host addresses in the fake)
"""

from __future__ import annotations

import ctypes

SUCCESS = 0
INVALID_VALUE = 1
OUT_OF_MEMORY = 2
NOT_INITIALIZED = 3
NO_DEVICE = 100
INVALID_DEVICE = 101
INVALID_CONTEXT = 201
INVALID_HANDLE = 400
NOT_READY = 600
ILLEGAL_ADDRESS = 700
CONTEXT_IS_DESTROYED = 709
NOT_PERMITTED = 800
NOT_SUPPORTED = 801

ATTR_VMM_SUPPORTED = 102
ATTR_POSIX_FD_SUPPORTED = 103
HANDLE_TYPE_POSIX_FD = 1
HANDLE_TYPE_WIN32 = 2
ALLOCATION_TYPE_PINNED = 1
LOCATION_TYPE_DEVICE = 1
ACCESS_NONE = 0
ACCESS_READ = 1
ACCESS_READWRITE = 3
STREAM_NON_BLOCKING = 1
STREAM_LEGACY = 1
STREAM_PER_THREAD = 2
GRANULARITY = 2 << 20

CUresult = ctypes.c_int
CUdevice = ctypes.c_int
CUdeviceptr = ctypes.c_ulonglong
CUhandle = ctypes.c_ulonglong  # CUmemGenericAllocationHandle
CUcontext = ctypes.c_void_p
CUstream = ctypes.c_void_p
HOST_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class CUuuid(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_char * 16)]


class CUmemLocation(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("id", ctypes.c_int)]


class AllocFlags(ctypes.Structure):
    _fields_ = [
        ("compressionType", ctypes.c_ubyte),
        ("gpuDirectRDMACapable", ctypes.c_ubyte),
        ("usage", ctypes.c_ushort),
        ("reserved", ctypes.c_ubyte * 4),
    ]


class CUmemAllocationProp(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("requestedHandleTypes", ctypes.c_int),
        ("location", CUmemLocation),
        ("win32HandleMetaData", ctypes.c_void_p),
        ("allocFlags", AllocFlags),
    ]


class CUmemAccessDesc(ctypes.Structure):
    _fields_ = [("location", CUmemLocation), ("flags", ctypes.c_int)]


P = ctypes.POINTER
_PROTOTYPES: dict[str, tuple[object, list[object]]] = {
    "cuInit": (CUresult, [ctypes.c_uint]),
    "cuDriverGetVersion": (CUresult, [P(ctypes.c_int)]),
    "cuDeviceGetCount": (CUresult, [P(ctypes.c_int)]),
    "cuDeviceGet": (CUresult, [P(CUdevice), ctypes.c_int]),
    "cuDeviceGetUuid": (CUresult, [P(CUuuid), CUdevice]),
    "cuDeviceGetUuid_v2": (CUresult, [P(CUuuid), CUdevice]),
    "cuDeviceGetAttribute": (CUresult, [P(ctypes.c_int), ctypes.c_int, CUdevice]),
    "cuDeviceGetName": (CUresult, [ctypes.c_char_p, ctypes.c_int, CUdevice]),
    "cuDevicePrimaryCtxRetain": (CUresult, [P(CUcontext), CUdevice]),
    "cuDevicePrimaryCtxRelease_v2": (CUresult, [CUdevice]),
    "cuCtxPushCurrent_v2": (CUresult, [CUcontext]),
    "cuCtxPopCurrent_v2": (CUresult, [P(CUcontext)]),
    "cuCtxGetCurrent": (CUresult, [P(CUcontext)]),
    "cuCtxSetCurrent": (CUresult, [CUcontext]),
    "cuCtxSynchronize": (CUresult, []),
    "cuGetErrorName": (CUresult, [CUresult, P(ctypes.c_char_p)]),
    "cuGetErrorString": (CUresult, [CUresult, P(ctypes.c_char_p)]),
    "cuMemGetAllocationGranularity": (
        CUresult,
        [P(ctypes.c_size_t), P(CUmemAllocationProp), ctypes.c_int],
    ),
    "cuMemCreate": (
        CUresult,
        [P(CUhandle), ctypes.c_size_t, P(CUmemAllocationProp), ctypes.c_ulonglong],
    ),
    "cuMemRelease": (CUresult, [CUhandle]),
    "cuMemExportToShareableHandle": (
        CUresult,
        [ctypes.c_void_p, CUhandle, ctypes.c_int, ctypes.c_ulonglong],
    ),
    "cuMemImportFromShareableHandle": (CUresult, [P(CUhandle), ctypes.c_void_p, ctypes.c_int]),
    "cuMemAddressReserve": (
        CUresult,
        [P(CUdeviceptr), ctypes.c_size_t, ctypes.c_size_t, CUdeviceptr, ctypes.c_ulonglong],
    ),
    "cuMemAddressFree": (CUresult, [CUdeviceptr, ctypes.c_size_t]),
    "cuMemMap": (
        CUresult,
        [CUdeviceptr, ctypes.c_size_t, ctypes.c_size_t, CUhandle, ctypes.c_ulonglong],
    ),
    "cuMemUnmap": (CUresult, [CUdeviceptr, ctypes.c_size_t]),
    "cuMemSetAccess": (
        CUresult,
        [CUdeviceptr, ctypes.c_size_t, P(CUmemAccessDesc), ctypes.c_size_t],
    ),
    "cuStreamCreate": (CUresult, [P(CUstream), ctypes.c_uint]),
    "cuStreamDestroy_v2": (CUresult, [CUstream]),
    "cuStreamQuery": (CUresult, [CUstream]),
    "cuStreamSynchronize": (CUresult, [CUstream]),
    "cuLaunchHostFunc": (CUresult, [CUstream, HOST_FN, ctypes.c_void_p]),
    "cuMemcpyDtoH_v2": (CUresult, [ctypes.c_void_p, CUdeviceptr, ctypes.c_size_t]),
    "cuMemcpyHtoD_v2": (CUresult, [CUdeviceptr, ctypes.c_void_p, ctypes.c_size_t]),
    "cuMemcpyHtoDAsync_v2": (
        CUresult,
        [CUdeviceptr, ctypes.c_void_p, ctypes.c_size_t, CUstream],
    ),
    "cuMemcpyDtoHAsync_v2": (
        CUresult,
        [ctypes.c_void_p, CUdeviceptr, ctypes.c_size_t, CUstream],
    ),
    "cuMemsetD8_v2": (CUresult, [CUdeviceptr, ctypes.c_ubyte, ctypes.c_size_t]),
    "cuMemsetD8Async": (CUresult, [CUdeviceptr, ctypes.c_ubyte, ctypes.c_size_t, CUstream]),
    "fake_cuda_stream_create": (ctypes.c_int, [P(ctypes.c_void_p)]),
    "fake_cuda_stream_destroy": (ctypes.c_int, [ctypes.c_void_p]),
    "fake_cuda_enqueue_fill": (
        ctypes.c_int,
        [ctypes.c_void_p, ctypes.c_ulonglong, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint],
    ),
    "fake_cuda_enqueue_sleep": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint]),
    "fake_cuda_stats": (ctypes.c_ulonglong, [ctypes.c_char_p]),
}

EXPORTED = sorted(_PROTOTYPES)


class CudaError(RuntimeError):
    def __init__(self, code: int, what: str) -> None:
        super().__init__(f"{what}: CUDA error {code}")
        self.code = code


def check(rc: int, what: str = "CUDA call") -> None:
    if rc != SUCCESS:
        raise CudaError(rc, what)


def load(path: str) -> ctypes.CDLL:
    """The library at path with every prototype declared (ctypes.CDLL releases the GIL in calls,
    so host functions written in Python can run while the caller waits)."""
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def alloc_prop(device: int = 0, handle_types: int = HANDLE_TYPE_POSIX_FD) -> CUmemAllocationProp:
    prop = CUmemAllocationProp()
    prop.type = ALLOCATION_TYPE_PINNED
    prop.requestedHandleTypes = handle_types
    prop.location.type = LOCATION_TYPE_DEVICE
    prop.location.id = device
    return prop


def access(device: int, flags: int) -> CUmemAccessDesc:
    desc = CUmemAccessDesc()
    desc.location.type = LOCATION_TYPE_DEVICE
    desc.location.id = device
    desc.flags = flags
    return desc


def stat(lib: ctypes.CDLL, what: str) -> int:
    return int(lib.fake_cuda_stats(what.encode()))


def open_context(lib: ctypes.CDLL, device: int = 0) -> ctypes.c_void_p:
    """cuInit, then retain the device's primary context and push it on this thread."""
    check(lib.cuInit(0), "cuInit")
    ctx = CUcontext()
    check(lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), device), "cuDevicePrimaryCtxRetain")
    check(lib.cuCtxPushCurrent_v2(ctx), "cuCtxPushCurrent_v2")
    return ctx


def create(lib: ctypes.CDLL, size: int = GRANULARITY, device: int = 0) -> int:
    """A new POSIX-fd-shareable allocation; returns its handle."""
    handle = CUhandle()
    prop = alloc_prop(device)
    check(lib.cuMemCreate(ctypes.byref(handle), size, ctypes.byref(prop), 0), "cuMemCreate")
    return int(handle.value)


def map_handle(lib: ctypes.CDLL, handle: int, size: int, flags: int, device: int = 0) -> int:
    """Reserves an address range, maps the allocation there and sets the device's access; returns
    the address (flags ACCESS_NONE: no cuMemSetAccess call at all)."""
    ptr = CUdeviceptr()
    check(lib.cuMemAddressReserve(ctypes.byref(ptr), size, 0, 0, 0), "cuMemAddressReserve")
    check(lib.cuMemMap(ptr, size, 0, handle, 0), "cuMemMap")
    if flags != ACCESS_NONE:
        desc = access(device, flags)
        check(lib.cuMemSetAccess(ptr, size, ctypes.byref(desc), 1), "cuMemSetAccess")
    return int(ptr.value)


def unmap(lib: ctypes.CDLL, ptr: int, size: int) -> None:
    check(lib.cuMemUnmap(ptr, size), "cuMemUnmap")
    check(lib.cuMemAddressFree(ptr, size), "cuMemAddressFree")
