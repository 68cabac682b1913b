// SPDX-License-Identifier: Apache-2.0
#include "allocator.hpp"

namespace {

constexpr const char *BIPS_MEMORY_TYPE = "BipsMemory";

struct BipsMemory {
    GstMemory mem;
    bips::gst::MemoryOwner *owner; // null in sub-memories: their parent keeps the owner alive
    guint8 *data;                  // start of the whole area (maps add mem.offset)
};

} // namespace

G_BEGIN_DECLS
#define GST_TYPE_BIPS_ALLOCATOR (gst_bips_allocator_get_type())
G_DECLARE_FINAL_TYPE(GstBipsAllocator, gst_bips_allocator, GST, BIPS_ALLOCATOR, GstAllocator)
G_END_DECLS

struct _GstBipsAllocator {
    GstAllocator parent;
};

G_DEFINE_TYPE(GstBipsAllocator, gst_bips_allocator, GST_TYPE_ALLOCATOR)

static gpointer bips_mem_map(GstMemory *mem, gsize, GstMapFlags) {
    return reinterpret_cast<BipsMemory *>(mem)->data;
}

static void bips_mem_unmap(GstMemory *) {}

static GstMemory *bips_mem_share(GstMemory *mem, gssize offset, gssize size) {
    GstMemory *parent = mem->parent ? mem->parent : mem;
    if (size == -1)
        size = static_cast<gssize>(mem->size) - offset;
    auto *sub = g_new0(BipsMemory, 1);
    gst_memory_init(GST_MEMORY_CAST(sub),
                    static_cast<GstMemoryFlags>(GST_MINI_OBJECT_FLAGS(parent) |
                                                GST_MINI_OBJECT_FLAG_LOCK_READONLY),
                    mem->allocator, parent, mem->maxsize, mem->align,
                    mem->offset + static_cast<gsize>(offset), static_cast<gsize>(size));
    sub->data = reinterpret_cast<BipsMemory *>(mem)->data;
    sub->owner = nullptr;
    return GST_MEMORY_CAST(sub);
}

static void bips_mem_free(GstAllocator *, GstMemory *mem) {
    auto *m = reinterpret_cast<BipsMemory *>(mem);
    delete m->owner; // gives back the bips buffer / frame (or drops the pin)
    g_free(m);
}

static void gst_bips_allocator_class_init(GstBipsAllocatorClass *klass) {
    auto *alloc_class = GST_ALLOCATOR_CLASS(klass);
    alloc_class->alloc = nullptr; // memories are only made by wrap_memory()
    alloc_class->free = bips_mem_free;
}

static void gst_bips_allocator_init(GstBipsAllocator *self) {
    auto *alloc = GST_ALLOCATOR_CAST(self);
    alloc->mem_type = BIPS_MEMORY_TYPE;
    alloc->mem_map = bips_mem_map;
    alloc->mem_unmap = bips_mem_unmap;
    alloc->mem_share = bips_mem_share;
    // mem_copy and mem_is_span keep GstAllocator's generic versions: a copy lands in ordinary
    // memory, which is what a writer of read-only frame memory needs.
    GST_OBJECT_FLAG_SET(self, GST_ALLOCATOR_FLAG_CUSTOM_ALLOC);
}

static GstAllocator *bips_allocator() {
    static GstAllocator *const allocator = [] {
        auto *a = GST_ALLOCATOR_CAST(g_object_new(GST_TYPE_BIPS_ALLOCATOR, nullptr));
        gst_object_ref_sink(a);
        // One per process, for the life of the process.
        GST_OBJECT_FLAG_SET(a, GST_OBJECT_FLAG_MAY_BE_LEAKED);
        return a;
    }();
    return allocator;
}

namespace bips::gst {

GstMemory *wrap_memory(std::unique_ptr<MemoryOwner> owner, void *data, std::size_t maxsize,
                       std::size_t size, bool readonly) {
    auto *m = g_new0(BipsMemory, 1);
    gst_memory_init(GST_MEMORY_CAST(m),
                    readonly ? GST_MEMORY_FLAG_READONLY : static_cast<GstMemoryFlags>(0),
                    bips_allocator(), nullptr, maxsize, 0, 0, size);
    m->data = static_cast<guint8 *>(data);
    m->owner = owner.release();
    return GST_MEMORY_CAST(m);
}

MemoryOwner *memory_owner(GstMemory *mem) {
    if (!mem || !gst_memory_is_type(mem, BIPS_MEMORY_TYPE) || mem->parent || mem->offset != 0)
        return nullptr;
    return reinterpret_cast<BipsMemory *>(mem)->owner;
}

} // namespace bips::gst
