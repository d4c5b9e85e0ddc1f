// SPDX-License-Identifier: GPL-2.0
/*
 * virtio_ivshmem: the Linux front end of virtio over ivshmem, written for
 * cellink (wire contract: docs/virtio-over-ivshmem.md; the guest image:
 * docs/guests.md).
 *
 * It binds an ivshmem function whose link carries a virtio front-end
 * protocol (0x8000 + virtio device id) and registers a virtio device with
 * the kernel's virtio core, so the stock driver takes it: for a console,
 * virtio_console makes /dev/hvcN.
 *
 *  - QEMU's ivshmem v1 (1af4:1110, ivshmem-doorbell) only when the cellink
 *    link descriptor at BAR2 + 0x800 is valid (magic, version, sizes against
 *    BAR2's length) and says a protocol in 0x8000..0xbfff and 2 peers. Any
 *    other v1 device is -ENODEV (uio_ivshmem declines these, so each module
 *    binds its own devices). The own peer id is IVPosition, the partner
 *    1 - id.
 *  - The Jailhouse ivshmem 2.0 device (110a:4106) with class 0xff8000..
 *    0xffbfff: the section sizes come from the vendor capability, the memory
 *    from BAR2 or the capability's base address; STATE and INT_CONTROL are
 *    registers, one-shot mode is turned off. NOTHING HAS RUN THE v2 PATH:
 *    there is no ivshmem 2.0 device to test it on yet (cellink issue 15); it
 *    was written from the Jailhouse specification and checked by reading
 *    only.
 *
 * Shared memory (offsets in the R/W section):
 *
 *   0x0000 +------------------------------------+
 *          | header 0x4c + device config        |  the register window
 *   0x1000 +------------------------------------+
 *          | pool: vrings and bounce buffers,   |  allocated here, by us
 *          | a gen_pool                         |
 *        R +------------------------------------+
 *
 * Registers are written with the write_transaction protocol: wait until
 * write_transaction is 0, store the field, barrier, store the field's offset
 * in write_transaction, ring the back end's vector 0, wait until it is 0
 * again. Every wait is bounded (module parameter write_timeout_ms) and gives
 * up at once when the back end's state leaves READY: a dead back end never
 * hangs the kernel, it breaks the device.
 *
 * DMA: the vrings and every buffer must lie in the shared R/W section, and
 * the back end only understands offsets in it. The PCI device gets its own
 * dma_map_ops (set_dma_ops; virtio_ring does its DMA through
 * vdev->dev.parent, the PCI device) which
 *   - allocate coherent memory (the vrings) from a gen_pool over the pool
 *     region, page-aligned and zeroed;
 *   - bounce every streaming mapping (map_page, map_sg) through a buffer of
 *     that pool: to-device data is copied in at map time, from-device data
 *     is copied back at unmap time (and on the sync calls); a from-device
 *     bounce buffer is zeroed at map time, so the back end never sees stale
 *     guest memory;
 *   - return dma_addr_t = the offset in the R/W section, and
 *     DMA_MAPPING_ERROR when the pool is exhausted.
 * We negotiate VIRTIO_F_ACCESS_PLATFORM (and refuse a back end that does not
 * offer it), so virtio_ring uses the DMA API for everything. Why this and
 * not the alternatives: a restricted-dma-pool (swiotlb) needs a device tree
 * reserved-memory node and puts physical addresses on the wire;
 * dma_declare_coherent_memory covers only coherent allocations, not the
 * kmalloc'd buffers virtio_console maps; ops of our own work on any
 * platform, keep the guest's kernel memory private (the back end sees only
 * the copies) and protect the driver from a back end that rewrites a buffer
 * after it was used (the driver reads its private copy).
 *
 * Output with interrupts off: virtio_console's put_chars() (the kernel
 * console and hvc tty writes) kicks and then spins, interrupts off, until the
 * back end has used the buffer. A back end that dies then would hang a
 * single-CPU guest for good (our interrupt cannot arrive, and its successor
 * waits for our state to drop). So a kick made with interrupts off for a
 * device-readable buffer polls until the buffer is used, or the back end's
 * state entry leaves READY (the daemon resets it when the back end dies), or
 * output_timeout_ms passes; in the last two cases it marks the pending
 * output used itself (lost), which ends the spin, and the device work then
 * breaks and replaces the device.
 *
 * Interrupts (MSI-X, Bus Master set: MSI-X messages are bus-master writes
 * and are dropped without it): vector 0 carries config changes and state
 * changes; the queues get a vector each when the link has enough vectors,
 * else they share vector 1 (which checks queue_event), else vector 0.
 *
 * States (the state table, one u32 per peer; 0 RESET, 1 READY): v1 stores
 * its own entry at BAR2 + 4 * id and rings the partner's vector 0; v2 writes
 * the STATE register. The device is registered only while the back end is
 * READY, and our state is READY before our first register write. When the
 * back end leaves READY the device is broken (virtio_break_device) and our
 * state goes to 0; when it is READY again, a work item unregisters the old
 * device and registers a new one (the guest sees a device reset: a new hvc
 * appears). A back end that reports DEVICE_NEEDS_RESET gets the same
 * treatment, at most VIRTIO_IVSHMEM_MAX_NEEDS_RESET times per back-end
 * session. Unbinding writes state 0 and frees everything.
 *
 * sysfs (on the PCI device): pool_size and pool_free, in bytes, say how much
 * of the pool the vrings and the mapped buffers take.
 */

#include <linux/delay.h>
#include <linux/dma-map-ops.h>
#include <linux/genalloc.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/virtio_ring.h>
#include <linux/workqueue.h>

#define DRV_NAME "virtio_ivshmem"

/* ivshmem v1 (QEMU docs/specs/ivshmem-spec.rst) */
#define IVSHMEM_V1_VENDOR 0x1af4
#define IVSHMEM_V1_DEVICE 0x1110
#define IVSHMEM_V1_IV_POSITION 0x08
#define IVSHMEM_DOORBELL 0x0c /* v1 and v2: peer << 16 | vector */

/* ivshmem 2.0: ivshmem/include/cellink/ivshmem/registers_v2.hpp */
#define IVSHMEM_V2_VENDOR 0x110a
#define IVSHMEM_V2_DEVICE 0x4106
#define IVSHMEM_V2_ID 0x00
#define IVSHMEM_V2_MAX_PEERS 0x04
#define IVSHMEM_V2_INT_CTRL 0x08
#define IVSHMEM_V2_STATE 0x10
#define IVSHMEM_V2_CAP_LENGTH 0x02
#define IVSHMEM_V2_CAP_PRIV_CTRL 0x03
#define IVSHMEM_V2_CAP_STATE_TABLE_SIZE 0x04
#define IVSHMEM_V2_CAP_RW_SECTION_SIZE 0x08
#define IVSHMEM_V2_CAP_OUTPUT_SECTION_SIZE 0x10
#define IVSHMEM_V2_CAP_BASE_ADDRESS 0x18
#define IVSHMEM_V2_CAP_LENGTH_WITH_BASE 0x20

#define IVSHMEM_REGS_BAR 0
#define IVSHMEM_SHMEM_BAR 2

/* The cellink link descriptor: ivshmem/include/cellink/ivshmem/
 * link_descriptor.hpp and layout.hpp (docs/ivshmem-layout.md). */
#define LINK_DESCRIPTOR_OFFSET 0x800
#define LINK_DESCRIPTOR_MAGIC 0x4b4e4c43 /* "CLNK" */
#define LINK_DESCRIPTOR_VERSION 1
#define LINK_NAME_CAPACITY 32
#define LINK_MAX_VECTORS 64

struct link_descriptor {
	__le32 magic;
	__le16 version;
	__le16 descriptor_size;
	__le32 peers;
	__le32 vectors;
	__le32 protocol;
	__le32 flags;
	__le64 state_table_size;
	__le64 rw_section_size;
	__le64 output_section_size;
	__le64 memory_size;
	__le64 reserved0;
	char name[LINK_NAME_CAPACITY];
	u8 reserved1[32];
};
static_assert(offsetof(struct link_descriptor, protocol) == 0x10);
static_assert(offsetof(struct link_descriptor, memory_size) == 0x30);
static_assert(offsetof(struct link_descriptor, name) == 0x40);
static_assert(sizeof(struct link_descriptor) == 0x80);

/* Protocol ids: ivshmem/include/cellink/ivshmem/protocol.hpp */
#define PROTOCOL_VIRTIO_FRONT_FIRST 0x8000
#define PROTOCOL_VIRTIO_FRONT_LAST 0xbfff
/* modpost can express only whole-byte class masks in the module alias:
 * the table matches base class 0xff and probe checks the protocol range. */
#define V2_CLASS_IVSHMEM 0xff0000
#define V2_CLASS_IVSHMEM_MASK 0xff0000

/* The header: transports/include/cellink/transports/
 * virtio_ivshmem_format.hpp (VirtioIvshmemHeader). D = back end (device),
 * F = front end (us). The fields are accessed one by one, never as a struct
 * copy: the wire header is 0x4c bytes, the C struct 0x50. */
struct virtio_ivshmem_header {
	__le32 revision; /* D */
	__le32 size; /* D: 0x4c + device config size */
	__le32 write_transaction; /* F sets the offset, D clears */
	__le32 device_features; /* D */
	__le32 device_features_sel; /* F */
	__le32 driver_features; /* F */
	__le32 driver_features_sel; /* F */
	__le32 queue_sel; /* F */
	__le16 queue_size; /* D: max on select; F: its choice */
	__le16 queue_device_vector; /* D */
	__le16 queue_driver_vector; /* F */
	__le16 queue_enable; /* F */
	__le64 queue_desc; /* F */
	__le64 queue_driver; /* F */
	__le64 queue_device; /* F */
	u8 config_event; /* D sets, F clears */
	u8 queue_event; /* D sets, F clears */
	u8 reserved[2];
	__le32 device_status; /* F writes, D corrects */
	__le32 config_generation; /* D: odd while rewriting */
};
static_assert(offsetof(struct virtio_ivshmem_header, write_transaction) == 0x08);
static_assert(offsetof(struct virtio_ivshmem_header, queue_sel) == 0x1c);
static_assert(offsetof(struct virtio_ivshmem_header, queue_size) == 0x20);
static_assert(offsetof(struct virtio_ivshmem_header, queue_enable) == 0x26);
static_assert(offsetof(struct virtio_ivshmem_header, queue_desc) == 0x28);
static_assert(offsetof(struct virtio_ivshmem_header, queue_device) == 0x38);
static_assert(offsetof(struct virtio_ivshmem_header, config_event) == 0x40);
static_assert(offsetof(struct virtio_ivshmem_header, queue_event) == 0x41);
static_assert(offsetof(struct virtio_ivshmem_header, device_status) == 0x44);
static_assert(offsetof(struct virtio_ivshmem_header, config_generation) == 0x48);

#define VIRTIO_IVSHMEM_REVISION 1
#define VIRTIO_IVSHMEM_HEADER_SIZE 0x4c
#define VIRTIO_IVSHMEM_POOL_OFFSET 0x1000
#define VIRTIO_IVSHMEM_MIN_RW_SECTION (2 * VIRTIO_IVSHMEM_POOL_OFFSET)
#define PEER_RESET 0
#define PEER_READY 1

#define HDR_OFFSET(field) offsetof(struct virtio_ivshmem_header, field)

#define VIRTIO_IVSHMEM_MAX_QUEUES 64
#define VIRTIO_IVSHMEM_MAX_NEEDS_RESET 3

static unsigned int write_timeout_ms = 2000;
module_param(write_timeout_ms, uint, 0644);
MODULE_PARM_DESC(write_timeout_ms,
		 "how long a register write waits for the back end (ms)");

static unsigned int output_timeout_ms = 5000;
module_param(output_timeout_ms, uint, 0644);
MODULE_PARM_DESC(output_timeout_ms,
		 "how long a kick with interrupts off waits for the back end to take device-readable buffers (ms)");

enum ivshmem_version { IVSHMEM_V1 = 1, IVSHMEM_V2 = 2 };

struct virtio_ivshmem;
struct virtio_ivshmem_vdev;

struct virtio_ivshmem_vq {
	struct virtqueue *vq; /* NULL: slot unused */
	struct virtio_ivshmem_vdev *vd;
	u16 device_vector; /* the back end's vector we ring, validated */
	u16 driver_vector; /* our vector it rings */
	u16 size; /* entries */
	/* Our private copies of the areas' R/W offsets (never read back). */
	u64 desc, avail, used;
};

/* One registered virtio device; a new one for every back-end session. */
struct virtio_ivshmem_vdev {
	struct virtio_device vdev;
	struct virtio_ivshmem *vi;
	bool live; /* false once the back end left: no register access */
	bool registered; /* register_virtio_device() returned: config IRQs */
	bool failed; /* a register write failed: get_status reports 0 */
	u32 config_size; /* device config bytes, validated at registration */
	struct mutex reg_lock; /* one select-and-window sequence at a time */
	unsigned int nqueues; /* slots of queues[] in use; under vi->vq_lock */
	struct virtio_ivshmem_vq queues[VIRTIO_IVSHMEM_MAX_QUEUES];
};

struct virtio_ivshmem_irq {
	struct virtio_ivshmem *vi;
	unsigned int vector;
};

struct virtio_ivshmem {
	struct pci_dev *pdev;
	enum ivshmem_version version;
	void __iomem *regs;
	u32 id;
	u32 partner;
	u32 link_vectors; /* the back end's vectors: bound for queue_device_vector */
	u32 device_id; /* virtio device id: protocol - 0x8000 */
	u32 protocol;

	/* Shared memory. v1: state_table and own_state point into BAR2; v2:
	 * the state table is read-only and own_state is NULL (STATE register). */
	const __le32 *state_table;
	__le32 *own_state;
	u8 *rw; /* the R/W section */
	u64 rw_size;

	/* The bounce pool over [POOL_OFFSET, rw_size). orig[g] is the
	 * physical address behind granule g of a streaming mapping. */
	struct gen_pool *pool;
	unsigned int granule_order;
	phys_addr_t *orig;

	unsigned int nvectors; /* MSI-X vectors allocated */
	struct virtio_ivshmem_irq irqs[LINK_MAX_VECTORS];
	unsigned int irqs_requested;

	/* Protects current (and its queue slots) against the IRQ handlers. */
	spinlock_t vq_lock;
	struct virtio_ivshmem_vdev *current_vd;

	/* Serialises the state work, probe's end and remove. */
	struct mutex state_lock;
	struct work_struct state_work;
	bool own_ready;
	bool removing;
	bool stalled; /* a kick timed out with the back end READY */
	unsigned int needs_reset_count;
};

static inline struct virtio_ivshmem_vdev *to_vd(struct virtio_device *vdev)
{
	return container_of(vdev, struct virtio_ivshmem_vdev, vdev);
}

static inline struct virtio_ivshmem_header *header(struct virtio_ivshmem *vi)
{
	return (struct virtio_ivshmem_header *)vi->rw;
}

/* --- peer states and doorbells ----------------------------------------- */

static void ring_partner(struct virtio_ivshmem *vi, u32 vector)
{
	writel((vi->partner << 16) | (vector & 0xffff),
	       vi->regs + IVSHMEM_DOORBELL);
}

/* The partner's state-table entry, read once. Relaxed is enough for the
 * decision; the header is read afterwards behind virt_rmb() (S1). */
static u32 partner_state(struct virtio_ivshmem *vi)
{
	u32 state = le32_to_cpu(READ_ONCE(vi->state_table[vi->partner]));

	/* S1: the back end writes its header before READY; pairs with its
	 * release store of the state. */
	virt_rmb();
	return state;
}

static void set_own_state(struct virtio_ivshmem *vi, u32 state)
{
	if (vi->version == IVSHMEM_V2) {
		/* The device copies it into the table and interrupts the
		 * partner on vector 0. */
		writel(state, vi->regs + IVSHMEM_V2_STATE);
	} else {
		WRITE_ONCE(*vi->own_state, cpu_to_le32(state));
		/* S2: the state before the doorbell that announces it. */
		wmb();
		ring_partner(vi, 0);
	}
	vi->own_ready = state == PEER_READY;
}

/* --- register writes (write_transaction) ------------------------------- */

/* Waits until the back end has taken the last write. */
static int wait_transaction_idle(struct virtio_ivshmem_vdev *vd)
{
	struct virtio_ivshmem *vi = vd->vi;
	unsigned long deadline = jiffies + msecs_to_jiffies(write_timeout_ms);
	unsigned int spins = 0;

	for (;;) {
		if (READ_ONCE(header(vi)->write_transaction) == 0) {
			/* W3: the window the back end filled is visible
			 * after its 0; pairs with its release store of 0. */
			virt_rmb();
			return 0;
		}
		if (!READ_ONCE(vd->live) || partner_state(vi) != PEER_READY)
			return -ENODEV;
		if (time_after(jiffies, deadline))
			return -ETIMEDOUT;
		if (++spins < 64)
			cpu_relax();
		else
			usleep_range(20, 100);
	}
}

static void write_failed(struct virtio_ivshmem_vdev *vd, u32 offset, int err)
{
	if (!vd->failed)
		dev_err(&vd->vi->pdev->dev,
			"register write at 0x%02x failed: %s; the device is broken\n",
			offset,
			err == -ETIMEDOUT ?
				"the back end did not take it in time" :
				"the back end is not READY");
	vd->failed = true;
}

/* Writes one header field of `size` bytes. Caller holds reg_lock. */
static int write_register(struct virtio_ivshmem_vdev *vd, u32 offset,
			  u64 value, unsigned int size)
{
	struct virtio_ivshmem *vi = vd->vi;
	void *field = vi->rw + offset;
	int err;

	lockdep_assert_held(&vd->reg_lock);
	if (vd->failed)
		return -EIO;
	err = wait_transaction_idle(vd);
	if (err)
		goto fail;
	switch (size) {
	case 2:
		WRITE_ONCE(*(__le16 *)field, cpu_to_le16(value));
		break;
	case 4:
		WRITE_ONCE(*(__le32 *)field, cpu_to_le32(value));
		break;
	default:
		WRITE_ONCE(*(__le64 *)field, cpu_to_le64(value));
		break;
	}
	/* W1: the field before its offset; pairs with the back end's acquire
	 * load of write_transaction. */
	virt_wmb();
	WRITE_ONCE(header(vi)->write_transaction, cpu_to_le32(offset));
	/* W2: the offset before the doorbell (MMIO) that announces it. */
	wmb();
	ring_partner(vi, 0);
	err = wait_transaction_idle(vd);
	if (err)
		goto fail;
	return 0;
fail:
	write_failed(vd, offset, err);
	return err;
}

static u32 read32(struct virtio_ivshmem *vi, u32 offset)
{
	return le32_to_cpu(READ_ONCE(*(__le32 *)(vi->rw + offset)));
}

static u16 read16(struct virtio_ivshmem *vi, u32 offset)
{
	return le16_to_cpu(READ_ONCE(*(__le16 *)(vi->rw + offset)));
}

/* --- DMA: a bounce pool in the R/W section --------------------------- */

static struct virtio_ivshmem *dev_to_vi(struct device *dev)
{
	return pci_get_drvdata(to_pci_dev(dev));
}

static u64 pool_size(struct virtio_ivshmem *vi)
{
	return vi->rw_size - VIRTIO_IVSHMEM_POOL_OFFSET;
}

/* Whether [dma, dma + size) lies in the pool. */
static bool pool_contains(struct virtio_ivshmem *vi, dma_addr_t dma, size_t size)
{
	return dma >= VIRTIO_IVSHMEM_POOL_OFFSET && size <= vi->rw_size &&
	       dma <= vi->rw_size - size;
}

static size_t granule_index(struct virtio_ivshmem *vi, dma_addr_t dma)
{
	return (dma - VIRTIO_IVSHMEM_POOL_OFFSET) >> vi->granule_order;
}

static void record_orig(struct virtio_ivshmem *vi, dma_addr_t dma, size_t size,
			phys_addr_t orig)
{
	size_t first = granule_index(vi, dma);
	size_t last = granule_index(vi, dma + size - 1);
	size_t g;

	for (g = first; g <= last; g++)
		vi->orig[g] = orig + ((g - first) << vi->granule_order);
}

/* The original address behind `dma` of a streaming mapping. */
static phys_addr_t lookup_orig(struct virtio_ivshmem *vi, dma_addr_t dma)
{
	phys_addr_t base = vi->orig[granule_index(vi, dma)];
	u64 mask = (1ULL << vi->granule_order) - 1;

	if (base == (phys_addr_t)-1)
		return base;
	return base + ((dma - VIRTIO_IVSHMEM_POOL_OFFSET) & mask);
}

static void bounce_copy(struct virtio_ivshmem *vi, dma_addr_t dma, size_t size,
			bool to_device)
{
	phys_addr_t orig = lookup_orig(vi, dma);

	if (orig == (phys_addr_t)-1) {
		dev_warn_ratelimited(&vi->pdev->dev,
				     "sync of 0x%llx: not a streaming mapping\n",
				     (unsigned long long)dma);
		return;
	}
	/* x86_64 and arm64 have no highmem: every page is in the direct map
	 * (map_page refuses highmem pages). */
	if (to_device)
		memcpy(vi->rw + dma, phys_to_virt(orig), size);
	else
		memcpy(phys_to_virt(orig), vi->rw + dma, size);
}

static void *ivshmem_dma_alloc(struct device *dev, size_t size,
			       dma_addr_t *dma_handle, gfp_t gfp,
			       unsigned long attrs)
{
	struct virtio_ivshmem *vi = dev_to_vi(dev);
	struct genpool_data_align align = { .align = PAGE_SIZE };
	unsigned long vaddr;

	if (size == 0)
		return NULL;
	/* Page-aligned, as dma_alloc_coherent() promises. */
	vaddr = gen_pool_alloc_algo(vi->pool, size, gen_pool_first_fit_align,
				    &align);
	if (!vaddr) {
		dev_warn_ratelimited(dev,
				     "pool exhausted: %zu coherent bytes wanted, %zu of %llu free\n",
				     size, gen_pool_avail(vi->pool),
				     pool_size(vi));
		return NULL;
	}
	*dma_handle = (u8 *)vaddr - vi->rw;
	record_orig(vi, *dma_handle, size, (phys_addr_t)-1);
	memset((void *)vaddr, 0, size);
	return (void *)vaddr;
}

static void ivshmem_dma_free(struct device *dev, size_t size, void *vaddr,
			     dma_addr_t dma_handle, unsigned long attrs)
{
	struct virtio_ivshmem *vi = dev_to_vi(dev);

	if (WARN_ON_ONCE(!pool_contains(vi, dma_handle, size) ||
			 vaddr != vi->rw + dma_handle))
		return;
	gen_pool_free(vi->pool, (unsigned long)vaddr, size);
}

static dma_addr_t ivshmem_dma_map_page(struct device *dev, struct page *page,
				       unsigned long offset, size_t size,
				       enum dma_data_direction dir,
				       unsigned long attrs)
{
	struct virtio_ivshmem *vi = dev_to_vi(dev);
	phys_addr_t orig = page_to_phys(page) + offset;
	unsigned long vaddr;
	dma_addr_t dma;

	if (size == 0 || WARN_ON_ONCE(PageHighMem(page)))
		return DMA_MAPPING_ERROR;
	vaddr = gen_pool_alloc(vi->pool, size);
	if (!vaddr) {
		dev_warn_ratelimited(dev,
				     "pool exhausted: %zu bytes to map, %zu of %llu free\n",
				     size, gen_pool_avail(vi->pool),
				     pool_size(vi));
		return DMA_MAPPING_ERROR;
	}
	dma = (u8 *)vaddr - vi->rw;
	record_orig(vi, dma, size, orig);
	if (dir == DMA_TO_DEVICE || dir == DMA_BIDIRECTIONAL) {
		if (!(attrs & DMA_ATTR_SKIP_CPU_SYNC))
			bounce_copy(vi, dma, size, true);
	} else {
		/* The back end sees no stale guest memory. */
		memset((void *)vaddr, 0, size);
	}
	return dma;
}

static void ivshmem_dma_unmap_page(struct device *dev, dma_addr_t dma,
				   size_t size, enum dma_data_direction dir,
				   unsigned long attrs)
{
	struct virtio_ivshmem *vi = dev_to_vi(dev);

	if (WARN_ON_ONCE(size == 0 || !pool_contains(vi, dma, size)))
		return;
	if ((dir == DMA_FROM_DEVICE || dir == DMA_BIDIRECTIONAL) &&
	    !(attrs & DMA_ATTR_SKIP_CPU_SYNC))
		bounce_copy(vi, dma, size, false);
	record_orig(vi, dma, size, (phys_addr_t)-1);
	gen_pool_free(vi->pool, (unsigned long)(vi->rw + dma), size);
}

static void ivshmem_dma_sync_for_cpu(struct device *dev, dma_addr_t dma,
				     size_t size, enum dma_data_direction dir)
{
	struct virtio_ivshmem *vi = dev_to_vi(dev);

	if (size == 0 || !pool_contains(vi, dma, size))
		return;
	if (dir == DMA_FROM_DEVICE || dir == DMA_BIDIRECTIONAL)
		bounce_copy(vi, dma, size, false);
}

static void ivshmem_dma_sync_for_device(struct device *dev, dma_addr_t dma,
					size_t size,
					enum dma_data_direction dir)
{
	struct virtio_ivshmem *vi = dev_to_vi(dev);

	if (size == 0 || !pool_contains(vi, dma, size))
		return;
	if (dir == DMA_TO_DEVICE || dir == DMA_BIDIRECTIONAL)
		bounce_copy(vi, dma, size, true);
}

static void ivshmem_dma_unmap_sg(struct device *dev, struct scatterlist *sgl,
				 int nents, enum dma_data_direction dir,
				 unsigned long attrs)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, nents, i)
		ivshmem_dma_unmap_page(dev, sg->dma_address, sg_dma_len(sg),
				       dir, attrs);
}

static int ivshmem_dma_map_sg(struct device *dev, struct scatterlist *sgl,
			      int nents, enum dma_data_direction dir,
			      unsigned long attrs)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, nents, i) {
		sg->dma_address = ivshmem_dma_map_page(dev, sg_page(sg),
						       sg->offset, sg->length,
						       dir, attrs);
		if (sg->dma_address == DMA_MAPPING_ERROR) {
			ivshmem_dma_unmap_sg(dev, sgl, i, dir,
					     attrs | DMA_ATTR_SKIP_CPU_SYNC);
			return -ENOMEM;
		}
		sg_dma_len(sg) = sg->length;
	}
	return nents;
}

static void ivshmem_dma_sync_sg_for_cpu(struct device *dev,
					struct scatterlist *sgl, int nents,
					enum dma_data_direction dir)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, nents, i)
		ivshmem_dma_sync_for_cpu(dev, sg->dma_address, sg_dma_len(sg),
					 dir);
}

static void ivshmem_dma_sync_sg_for_device(struct device *dev,
					   struct scatterlist *sgl, int nents,
					   enum dma_data_direction dir)
{
	struct scatterlist *sg;
	int i;

	for_each_sg(sgl, sg, nents, i)
		ivshmem_dma_sync_for_device(dev, sg->dma_address,
					    sg_dma_len(sg), dir);
}

static int ivshmem_dma_supported(struct device *dev, u64 mask)
{
	return 1; /* every address we hand out is a small section offset */
}

static size_t ivshmem_dma_max_mapping_size(struct device *dev)
{
	return pool_size(dev_to_vi(dev));
}

static const struct dma_map_ops ivshmem_dma_ops = {
	.alloc = ivshmem_dma_alloc,
	.free = ivshmem_dma_free,
	.map_page = ivshmem_dma_map_page,
	.unmap_page = ivshmem_dma_unmap_page,
	.map_sg = ivshmem_dma_map_sg,
	.unmap_sg = ivshmem_dma_unmap_sg,
	.sync_single_for_cpu = ivshmem_dma_sync_for_cpu,
	.sync_single_for_device = ivshmem_dma_sync_for_device,
	.sync_sg_for_cpu = ivshmem_dma_sync_sg_for_cpu,
	.sync_sg_for_device = ivshmem_dma_sync_sg_for_device,
	.dma_supported = ivshmem_dma_supported,
	.max_mapping_size = ivshmem_dma_max_mapping_size,
};

static int setup_pool(struct virtio_ivshmem *vi)
{
	struct device *dev = &vi->pdev->dev;
	u64 size = pool_size(vi);
	size_t granules;
	int ret;

	/* 64-byte granules (a cache line), coarser for a big section so the
	 * orig[] table stays at most 16384 entries. */
	vi->granule_order = max(6, fls64(size) - 1 - 14);
	granules = size >> vi->granule_order;
	vi->orig = devm_kmalloc_array(dev, granules, sizeof(*vi->orig),
				      GFP_KERNEL);
	if (!vi->orig)
		return -ENOMEM;
	memset(vi->orig, 0xff, granules * sizeof(*vi->orig));
	vi->pool = gen_pool_create(vi->granule_order, dev_to_node(dev));
	if (!vi->pool)
		return -ENOMEM;
	ret = gen_pool_add(vi->pool,
			   (unsigned long)(vi->rw + VIRTIO_IVSHMEM_POOL_OFFSET),
			   size, dev_to_node(dev));
	if (ret) {
		gen_pool_destroy(vi->pool);
		vi->pool = NULL;
	}
	return ret;
}

static void destroy_pool(struct virtio_ivshmem *vi)
{
	size_t avail = gen_pool_avail(vi->pool);

	/* gen_pool_destroy() BUGs on outstanding allocations: leak the pool
	 * (a few hundred bytes of bookkeeping) rather than crash. */
	if (avail != gen_pool_size(vi->pool)) {
		dev_err(&vi->pdev->dev,
			"%zu pool bytes still mapped at unbind: leaking the pool\n",
			gen_pool_size(vi->pool) - avail);
		return;
	}
	gen_pool_destroy(vi->pool);
}

/* --- virtio config ops ------------------------------------------------- */

static void vi_synchronize_irqs(struct virtio_ivshmem *vi)
{
	unsigned int i;

	for (i = 0; i < vi->irqs_requested; i++)
		synchronize_irq(pci_irq_vector(vi->pdev, i));
}

static void vi_get(struct virtio_device *vdev, unsigned int offset, void *buf,
		   unsigned int len)
{
	struct virtio_ivshmem_vdev *vd = to_vd(vdev);
	struct virtio_ivshmem *vi = vd->vi;
	const u8 *config = vi->rw + VIRTIO_IVSHMEM_HEADER_SIZE + offset;
	unsigned int tries;
	u32 before;

	if (offset > vd->config_size || len > vd->config_size - offset) {
		dev_warn_ratelimited(&vdev->dev,
				     "config read of %u bytes at %u: the back end offers %u\n",
				     len, offset, vd->config_size);
		memset(buf, 0, len);
		return;
	}
	/* The back end makes the generation odd while it rewrites the
	 * config; retry a bounded number of times, then take what is there
	 * (the core's generation check sees any change). */
	for (tries = 0; tries < 1000; tries++) {
		before = read32(vi, HDR_OFFSET(config_generation));
		if (before & 1) {
			udelay(1);
			continue;
		}
		/* C1: the config after the generation; pairs with the back
		 * end's release store of the even generation. */
		virt_rmb();
		break;
	}
	switch (len) {
	case 1:
		*(u8 *)buf = READ_ONCE(*config);
		break;
	case 2:
		if (IS_ALIGNED(offset, 2)) {
			*(__le16 *)buf = READ_ONCE(*(const __le16 *)config);
			break;
		}
		fallthrough;
	case 4:
		if (len == 4 && IS_ALIGNED(offset, 4)) {
			*(__le32 *)buf = READ_ONCE(*(const __le32 *)config);
			break;
		}
		fallthrough;
	default:
		memcpy(buf, config, len);
		break;
	}
}

static void vi_set(struct virtio_device *vdev, unsigned int offset,
		   const void *buf, unsigned int len)
{
	/* No device config field is writable (EMERG_WRITE is not offered). */
	dev_warn_once(&vdev->dev,
		      "config write of %u bytes at %u ignored: the device config is read-only\n",
		      len, offset);
}

static u32 vi_generation(struct virtio_device *vdev)
{
	return read32(to_vd(vdev)->vi, HDR_OFFSET(config_generation));
}

static u8 vi_get_status(struct virtio_device *vdev)
{
	struct virtio_ivshmem_vdev *vd = to_vd(vdev);
	u32 status = 0;

	mutex_lock(&vd->reg_lock);
	if (!vd->failed && READ_ONCE(vd->live) &&
	    wait_transaction_idle(vd) == 0)
		status = read32(vd->vi, HDR_OFFSET(device_status));
	mutex_unlock(&vd->reg_lock);
	return status & 0xff;
}

static void vi_set_status(struct virtio_device *vdev, u8 status)
{
	struct virtio_ivshmem_vdev *vd = to_vd(vdev);

	/* The core never writes 0 here; that is reset(). */
	mutex_lock(&vd->reg_lock);
	if (READ_ONCE(vd->live))
		write_register(vd, HDR_OFFSET(device_status), status, 4);
	mutex_unlock(&vd->reg_lock);
}

static void vi_reset(struct virtio_device *vdev)
{
	struct virtio_ivshmem_vdev *vd = to_vd(vdev);

	mutex_lock(&vd->reg_lock);
	/* A reset starts over: a failed write before it is forgotten. */
	vd->failed = false;
	if (READ_ONCE(vd->live))
		write_register(vd, HDR_OFFSET(device_status), 0, 4);
	mutex_unlock(&vd->reg_lock);
	/* No callback of the old configuration runs after this. */
	vi_synchronize_irqs(vd->vi);
}

static u64 vi_get_features(struct virtio_device *vdev)
{
	struct virtio_ivshmem_vdev *vd = to_vd(vdev);
	u64 features = 0;
	u32 sel;

	mutex_lock(&vd->reg_lock);
	for (sel = 0; sel < 2; sel++) {
		if (write_register(vd, HDR_OFFSET(device_features_sel), sel, 4))
			break;
		features |= (u64)read32(vd->vi, HDR_OFFSET(device_features))
			    << (32 * sel);
	}
	mutex_unlock(&vd->reg_lock);
	return features;
}

static int vi_finalize_features(struct virtio_device *vdev)
{
	struct virtio_ivshmem_vdev *vd = to_vd(vdev);
	u32 sel;
	int ret = 0;

	vring_transport_features(vdev);
	if (!__virtio_test_bit(vdev, VIRTIO_F_VERSION_1) ||
	    !__virtio_test_bit(vdev, VIRTIO_F_ACCESS_PLATFORM)) {
		dev_err(&vdev->dev,
			"the back end must offer VIRTIO_F_VERSION_1 and VIRTIO_F_ACCESS_PLATFORM (features 0x%llx)\n",
			vdev->features);
		return -EINVAL;
	}
	mutex_lock(&vd->reg_lock);
	for (sel = 0; sel < 2 && ret == 0; sel++) {
		ret = write_register(vd, HDR_OFFSET(driver_features_sel), sel,
				     4);
		if (ret == 0)
			ret = write_register(vd, HDR_OFFSET(driver_features),
					     (u32)(vdev->features >> (32 * sel)),
					     4);
	}
	mutex_unlock(&vd->reg_lock);
	return ret;
}

/* Whether the buffer last made available on `q` is device-readable (output,
 * like a console's transmit queue) rather than device-writable. Reads the
 * rings we wrote; a back end that rewrote them changes only whether the
 * bounded wait below runs. */
static bool last_buffer_is_output(struct virtio_ivshmem_vq *q)
{
	struct virtio_ivshmem *vi = q->vd->vi;
	u16 idx = read16(vi, q->avail + 2);
	u16 head = read16(vi, q->avail + 4 + 2 * ((idx - 1) & (q->size - 1)));

	if (head >= q->size)
		return false;
	return !(read16(vi, q->desc + 16 * head + 12) & VRING_DESC_F_WRITE);
}

/* Waits, with interrupts off, until the back end has used every buffer made
 * available on `q`. False when it left READY or output_timeout_ms passed. */
static bool wait_output_taken(struct virtio_ivshmem_vq *q)
{
	struct virtio_ivshmem *vi = q->vd->vi;
	u64 deadline = ktime_get_ns() + (u64)output_timeout_ms * NSEC_PER_MSEC;
	u16 avail_idx = read16(vi, q->avail + 2);

	for (;;) {
		if (read16(vi, q->used + 2) == avail_idx)
			return true;
		if (!READ_ONCE(q->vd->live) || partner_state(vi) != PEER_READY)
			return false; /* gone: the device work follows */
		if (ktime_get_ns() > deadline) {
			WRITE_ONCE(vi->stalled, true);
			if (!READ_ONCE(vi->removing))
				schedule_work(&vi->state_work);
			return false;
		}
		cpu_relax();
	}
}

/*
 * The back end will never use the output pending on `q`: mark it used
 * ourselves, with length 0 (the output is lost). Breaking the queue instead
 * would end virtio_console's spin too, but would leave put_chars()'s buffer
 * in the ring, and virtio_console's remove_vqs() takes every unused buffer
 * for one of its port_buffers: put_chars()'s is not one, and freeing it
 * crashes (seen: a general protection fault in free_buf()). In-order
 * completion is right for the queues this runs on (a console's transmit
 * queue); virtio_ring checks every id we write.
 */
static void complete_output(struct virtio_ivshmem_vq *q)
{
	struct virtio_ivshmem *vi = q->vd->vi;
	u16 avail_idx = read16(vi, q->avail + 2);
	u16 used_idx = read16(vi, q->used + 2);
	u16 mask = q->size - 1;
	unsigned int count = 0;

	while (used_idx != avail_idx && count++ < q->size) {
		u16 head = read16(vi, q->avail + 4 + 2 * (used_idx & mask));
		u64 entry = q->used + 4 + 8 * (used_idx & mask);

		WRITE_ONCE(*(__le32 *)(vi->rw + entry), cpu_to_le32(head));
		WRITE_ONCE(*(__le32 *)(vi->rw + entry + 4), 0);
		used_idx++;
	}
	/* U1: the entries before the index that publishes them; pairs with
	 * virtio_ring's read barrier after it reads used.idx. */
	virt_wmb();
	WRITE_ONCE(*(__le16 *)(vi->rw + q->used + 2), cpu_to_le16(used_idx));
	dev_warn_ratelimited(&q->vd->vdev.dev,
			     "the back end is gone or stalled: %u output buffer(s) dropped\n",
			     count);
}

static bool vi_notify(struct virtqueue *vq)
{
	struct virtio_ivshmem_vq *q = vq->priv;
	struct virtio_ivshmem *vi = q->vd->vi;
	/*
	 * virtio_console's put_chars() (kernel console and hvc tty writes)
	 * kicks with interrupts off and then spins until the buffer is used.
	 * If the back end dies then, nothing can stop that spin on a
	 * single-CPU guest: our vector-0 interrupt cannot arrive. So such a
	 * kick waits here, polling the back end's state entry (which the
	 * daemon resets when it dies), and completes the output itself when
	 * the back end is gone or stalled.
	 */
	bool spinning_output = irqs_disabled() && last_buffer_is_output(q);

	if (!READ_ONCE(q->vd->live) || partner_state(vi) != PEER_READY) {
		if (!spinning_output)
			return false; /* breaks the queue */
		complete_output(q);
		return true;
	}
	/* N1: virtio_ring published avail.idx before calling us (its own
	 * barrier); the doorbell is an MMIO write behind it. */
	ring_partner(vi, q->device_vector);
	if (spinning_output && !wait_output_taken(q))
		complete_output(q);
	return true;
}

/* The vector our queue `index` of `count` uses. */
static u16 queue_vector(struct virtio_ivshmem *vi, unsigned int index,
			unsigned int count)
{
	if (vi->nvectors >= 1 + count)
		return 1 + index;
	return vi->nvectors >= 2 ? 1 : 0;
}

static struct virtqueue *setup_queue(struct virtio_ivshmem_vdev *vd,
				     unsigned int index, u16 vector,
				     void (*callback)(struct virtqueue *),
				     const char *name, bool ctx)
{
	struct virtio_ivshmem *vi = vd->vi;
	struct virtio_ivshmem_vq *q = &vd->queues[index];
	struct virtqueue *vq;
	u16 max, device_vector, enabled;
	unsigned long flags;
	int err;

	mutex_lock(&vd->reg_lock);
	err = write_register(vd, HDR_OFFSET(queue_sel), index, 4);
	if (err)
		goto unlock;
	max = read16(vi, HDR_OFFSET(queue_size));
	device_vector = read16(vi, HDR_OFFSET(queue_device_vector));
	enabled = read16(vi, HDR_OFFSET(queue_enable));
	if (max == 0) {
		err = -ENOENT;
		goto unlock;
	}
	if (!is_power_of_2(max) || device_vector >= vi->link_vectors ||
	    enabled) {
		dev_err(&vd->vdev.dev,
			"queue %u: the back end shows size %u, vector %u (of %u), enable %u\n",
			index, max, device_vector, vi->link_vectors, enabled);
		err = -EINVAL;
		goto unlock;
	}
	vq = vring_create_virtqueue(index, max, SMP_CACHE_BYTES, &vd->vdev,
				    true, true, ctx, vi_notify, callback, name);
	if (!vq) {
		err = -ENOMEM;
		goto unlock;
	}
	q->vq = vq;
	q->vd = vd;
	q->device_vector = device_vector;
	q->driver_vector = vector;
	q->size = virtqueue_get_vring_size(vq);
	q->desc = virtqueue_get_desc_addr(vq);
	q->avail = virtqueue_get_avail_addr(vq);
	q->used = virtqueue_get_used_addr(vq);
	vq->priv = q;
	err = write_register(vd, HDR_OFFSET(queue_size), q->size, 2);
	if (!err)
		err = write_register(vd, HDR_OFFSET(queue_driver_vector),
				     vector, 2);
	if (!err)
		err = write_register(vd, HDR_OFFSET(queue_desc), q->desc, 8);
	if (!err)
		err = write_register(vd, HDR_OFFSET(queue_driver), q->avail, 8);
	if (!err)
		err = write_register(vd, HDR_OFFSET(queue_device), q->used, 8);
	if (!err)
		err = write_register(vd, HDR_OFFSET(queue_enable), 1, 2);
	if (!err &&
	    (read32(vi, HDR_OFFSET(device_status)) & VIRTIO_CONFIG_S_NEEDS_RESET)) {
		dev_err(&vd->vdev.dev,
			"queue %u: the back end refused it (DEVICE_NEEDS_RESET)\n",
			index);
		err = -EIO;
	}
	if (err) {
		q->vq = NULL;
		vring_del_virtqueue(vq);
		goto unlock;
	}
	spin_lock_irqsave(&vi->vq_lock, flags);
	vd->nqueues = max_t(unsigned int, vd->nqueues, index + 1);
	spin_unlock_irqrestore(&vi->vq_lock, flags);
	mutex_unlock(&vd->reg_lock);
	dev_info(&vd->vdev.dev,
		 "queue %u '%s': %u entries at 0x%llx, our vector %u, back end's %u\n",
		 index, name, virtqueue_get_vring_size(vq),
		 (unsigned long long)virtqueue_get_desc_addr(vq), vector,
		 device_vector);
	return vq;
unlock:
	mutex_unlock(&vd->reg_lock);
	return ERR_PTR(err);
}

static void vi_del_vqs(struct virtio_device *vdev)
{
	struct virtio_ivshmem_vdev *vd = to_vd(vdev);
	struct virtio_ivshmem *vi = vd->vi;
	struct virtqueue *vq, *next;
	unsigned long flags;
	unsigned int i;

	/* The rings go back to the pool: the back end must have stopped
	 * using them, which a reset guarantees. */
	if (READ_ONCE(vd->live) && !vd->failed &&
	    read32(vi, HDR_OFFSET(device_status)) != 0)
		vi_reset(vdev);
	spin_lock_irqsave(&vi->vq_lock, flags);
	for (i = 0; i < vd->nqueues; i++)
		vd->queues[i].vq = NULL;
	vd->nqueues = 0;
	spin_unlock_irqrestore(&vi->vq_lock, flags);
	vi_synchronize_irqs(vi);
	list_for_each_entry_safe(vq, next, &vdev->vqs, list)
		vring_del_virtqueue(vq);
}

static int vi_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
		       struct virtqueue *vqs[], vq_callback_t *callbacks[],
		       const char *const names[], const bool *ctx,
		       struct irq_affinity *desc)
{
	struct virtio_ivshmem_vdev *vd = to_vd(vdev);
	unsigned int i, count = 0, index = 0;

	for (i = 0; i < nvqs; i++)
		count += names[i] != NULL;
	if (count > VIRTIO_IVSHMEM_MAX_QUEUES)
		return -EINVAL;
	for (i = 0; i < nvqs; i++) {
		if (!names[i]) {
			vqs[i] = NULL;
			continue;
		}
		vqs[i] = setup_queue(vd, index,
				     queue_vector(vd->vi, index, count),
				     callbacks[i], names[i], ctx ? ctx[i] : false);
		if (IS_ERR(vqs[i])) {
			int err = PTR_ERR(vqs[i]);

			vi_del_vqs(vdev);
			return err;
		}
		index++;
	}
	return 0;
}

static void vi_synchronize_cbs(struct virtio_device *vdev)
{
	vi_synchronize_irqs(to_vd(vdev)->vi);
}

static const char *vi_bus_name(struct virtio_device *vdev)
{
	return pci_name(to_vd(vdev)->vi->pdev);
}

static const struct virtio_config_ops virtio_ivshmem_config_ops = {
	.get = vi_get,
	.set = vi_set,
	.generation = vi_generation,
	.get_status = vi_get_status,
	.set_status = vi_set_status,
	.reset = vi_reset,
	.find_vqs = vi_find_vqs,
	.del_vqs = vi_del_vqs,
	.synchronize_cbs = vi_synchronize_cbs,
	.get_features = vi_get_features,
	.finalize_features = vi_finalize_features,
	.bus_name = vi_bus_name,
};

/* --- interrupts ------------------------------------------------------- */

/* Runs the vrings on `vector`. Caller holds vq_lock. */
static irqreturn_t run_queues(struct virtio_ivshmem *vi, int irq,
			      unsigned int vector)
{
	struct virtio_ivshmem_vdev *vd = vi->current_vd;
	irqreturn_t ret = IRQ_NONE;
	unsigned int i;

	if (!vd)
		return IRQ_NONE;
	WRITE_ONCE(header(vi)->queue_event, 0);
	/* Q1: clear queue_event before scanning the used rings; pairs with
	 * the back end's full barrier between queue_event = 1 and its
	 * doorbell, so a used buffer is never missed. */
	virt_mb();
	for (i = 0; i < vd->nqueues; i++) {
		struct virtio_ivshmem_vq *q = &vd->queues[i];

		if (q->vq && q->driver_vector == vector &&
		    vring_interrupt(irq, q->vq) == IRQ_HANDLED)
			ret = IRQ_HANDLED;
	}
	return ret;
}

static irqreturn_t virtio_ivshmem_interrupt(int irq, void *data)
{
	struct virtio_ivshmem_irq *entry = data;
	struct virtio_ivshmem *vi = entry->vi;
	struct virtio_ivshmem_vdev *vd;

	spin_lock(&vi->vq_lock);
	vd = vi->current_vd;
	if (entry->vector == 0) {
		if (vd && READ_ONCE(vd->registered) &&
		    READ_ONCE(header(vi)->config_event)) {
			WRITE_ONCE(header(vi)->config_event, 0);
			/* Q2: clear before the config is read; pairs with
			 * the back end's barrier before its doorbell. */
			virt_mb();
			virtio_config_changed(&vd->vdev);
		}
		if (vi->nvectors == 1)
			run_queues(vi, irq, 0);
		/* State changes (and NEEDS_RESET) are handled in process
		 * context: breaking or replacing a device may sleep. */
		if (!READ_ONCE(vi->removing))
			schedule_work(&vi->state_work);
	} else {
		run_queues(vi, irq, entry->vector);
	}
	spin_unlock(&vi->vq_lock);
	/* MSI-X is never shared: every message is ours. */
	return IRQ_HANDLED;
}

/* --- device lifecycle --------------------------------------------------- */

static void virtio_ivshmem_release(struct device *dev)
{
	struct virtio_device *vdev = dev_to_virtio(dev);

	kfree(to_vd(vdev));
}

/* Unregisters the current device (live or broken). Caller holds
 * state_lock. */
static void remove_current(struct virtio_ivshmem *vi)
{
	struct virtio_ivshmem_vdev *vd;
	unsigned long flags;

	spin_lock_irqsave(&vi->vq_lock, flags);
	vd = vi->current_vd;
	vi->current_vd = NULL;
	spin_unlock_irqrestore(&vi->vq_lock, flags);
	if (!vd)
		return;
	vi_synchronize_irqs(vi); /* no handler still uses vd */
	unregister_virtio_device(&vd->vdev);
	if (gen_pool_avail(vi->pool) != gen_pool_size(vi->pool))
		dev_warn(&vi->pdev->dev,
			 "%zu pool bytes still mapped after the device went away\n",
			 gen_pool_size(vi->pool) - gen_pool_avail(vi->pool));
}

/* The back end left (or broke the device): no more register accesses. */
static void break_current(struct virtio_ivshmem *vi, const char *why)
{
	struct virtio_ivshmem_vdev *vd = vi->current_vd;

	dev_info(&vi->pdev->dev, "%s: virtio device %s broken\n", why,
		 dev_name(&vd->vdev.dev));
	WRITE_ONCE(vd->live, false);
	virtio_break_device(&vd->vdev);
}

/* The back end is READY and nothing live is registered: register a new
 * device. Caller holds state_lock. */
static void register_new(struct virtio_ivshmem *vi)
{
	struct virtio_ivshmem_vdev *vd;
	u32 revision = read32(vi, HDR_OFFSET(revision));
	u32 size = read32(vi, HDR_OFFSET(size));
	unsigned long flags;
	int ret;

	if (revision != VIRTIO_IVSHMEM_REVISION ||
	    size < VIRTIO_IVSHMEM_HEADER_SIZE ||
	    size > VIRTIO_IVSHMEM_POOL_OFFSET) {
		dev_err(&vi->pdev->dev,
			"back end READY with revision %u (want %u) and size %u (want %u..%u): not registering\n",
			revision, VIRTIO_IVSHMEM_REVISION, size,
			VIRTIO_IVSHMEM_HEADER_SIZE, VIRTIO_IVSHMEM_POOL_OFFSET);
		return;
	}
	vd = kzalloc(sizeof(*vd), GFP_KERNEL);
	if (!vd)
		return;
	vd->vi = vi;
	vd->live = true;
	vd->config_size = size - VIRTIO_IVSHMEM_HEADER_SIZE;
	mutex_init(&vd->reg_lock);
	vd->vdev.dev.parent = &vi->pdev->dev;
	vd->vdev.dev.release = virtio_ivshmem_release;
	vd->vdev.config = &virtio_ivshmem_config_ops;
	vd->vdev.id.device = vi->device_id;
	vd->vdev.id.vendor = vi->pdev->vendor;

	/* Our state is READY before our first register write (the core
	 * resets the device first thing). */
	set_own_state(vi, PEER_READY);
	spin_lock_irqsave(&vi->vq_lock, flags);
	vi->current_vd = vd;
	spin_unlock_irqrestore(&vi->vq_lock, flags);
	ret = register_virtio_device(&vd->vdev);
	if (ret) {
		dev_err(&vi->pdev->dev, "register_virtio_device: %d\n", ret);
		spin_lock_irqsave(&vi->vq_lock, flags);
		vi->current_vd = NULL;
		spin_unlock_irqrestore(&vi->vq_lock, flags);
		vi_synchronize_irqs(vi);
		put_device(&vd->vdev.dev);
		return;
	}
	WRITE_ONCE(vd->registered, true);
	dev_info(&vi->pdev->dev,
		 "virtio device %s registered: virtio id %u, %u config bytes\n",
		 dev_name(&vd->vdev.dev), vi->device_id, vd->config_size);
}

static void virtio_ivshmem_state_work(struct work_struct *work)
{
	struct virtio_ivshmem *vi =
		container_of(work, struct virtio_ivshmem, state_work);
	struct virtio_ivshmem_vdev *vd;
	u32 partner;

	mutex_lock(&vi->state_lock);
	if (vi->removing)
		goto out;
	partner = partner_state(vi);
	vd = vi->current_vd;
	if (partner != PEER_READY) {
		if (vd && READ_ONCE(vd->live))
			break_current(vi, "the back end left READY");
		if (vi->own_ready || vd)
			set_own_state(vi, PEER_RESET);
		vi->needs_reset_count = 0;
		WRITE_ONCE(vi->stalled, false);
		goto out;
	}
	if (vd && READ_ONCE(vd->live)) {
		bool stalled = xchg(&vi->stalled, false);
		bool needs_reset = read32(vi, HDR_OFFSET(device_status)) &
				   VIRTIO_CONFIG_S_NEEDS_RESET;

		if (!stalled && !needs_reset)
			goto out; /* a config change or a spurious ring */
		if (vi->needs_reset_count >= VIRTIO_IVSHMEM_MAX_NEEDS_RESET) {
			dev_err_once(&vi->pdev->dev,
				     "the back end broke the device again: giving up until it restarts\n");
			goto out;
		}
		vi->needs_reset_count++;
		break_current(vi, needs_reset ?
					  "the back end reports DEVICE_NEEDS_RESET" :
					  "the back end took no output for output_timeout_ms");
	}
	/* The back end is READY and nothing live is registered: replace the
	 * broken device, if any, with a new one (a device reset). */
	remove_current(vi);
	register_new(vi);
out:
	mutex_unlock(&vi->state_lock);
}

/* --- probe ------------------------------------------------------------ */

static u64 round_up_page(u64 value)
{
	return value == 0 ? PAGE_SIZE : round_up(value, (u64)PAGE_SIZE);
}

/* Validates a private copy of the v1 link descriptor against BAR2's
 * length (the checks of validate() in link_descriptor.hpp). */
static int check_descriptor(struct virtio_ivshmem *vi,
			    const struct link_descriptor *d, u64 bar_size)
{
	struct device *dev = &vi->pdev->dev;
	u64 state = le64_to_cpu(d->state_table_size);
	u64 rw = le64_to_cpu(d->rw_section_size);
	u64 output = le64_to_cpu(d->output_section_size);
	u64 memory = le64_to_cpu(d->memory_size);
	u32 peers = le32_to_cpu(d->peers);
	u32 vectors = le32_to_cpu(d->vectors);
	u64 used, outputs;
	unsigned int i;
	bool reserved_zero = d->flags == 0 && d->reserved0 == 0;

	if (le32_to_cpu(d->magic) != LINK_DESCRIPTOR_MAGIC) {
		dev_info(dev, "no cellink link descriptor: not a virtio link\n");
		return -ENODEV;
	}
	for (i = 0; i < sizeof(d->reserved1); i++)
		reserved_zero = reserved_zero && d->reserved1[i] == 0;
	if (le16_to_cpu(d->version) != LINK_DESCRIPTOR_VERSION ||
	    le16_to_cpu(d->descriptor_size) != sizeof(*d) || !reserved_zero ||
	    strnlen(d->name, LINK_NAME_CAPACITY) == LINK_NAME_CAPACITY ||
	    le32_to_cpu(d->protocol) > 0xffff || vectors == 0 ||
	    vectors > LINK_MAX_VECTORS) {
		dev_err(dev,
			"malformed link descriptor: version %u, size %u, protocol 0x%x, vectors %u\n",
			le16_to_cpu(d->version),
			le16_to_cpu(d->descriptor_size),
			le32_to_cpu(d->protocol), vectors);
		return -EINVAL;
	}
	vi->protocol = le32_to_cpu(d->protocol);
	if (vi->protocol < PROTOCOL_VIRTIO_FRONT_FIRST ||
	    vi->protocol > PROTOCOL_VIRTIO_FRONT_LAST) {
		dev_info(dev,
			 "link '%.31s' carries protocol 0x%04x, not a virtio front end: not ours\n",
			 d->name, vi->protocol);
		return -ENODEV;
	}
	if (peers != 2) {
		dev_err(dev,
			"virtio link '%.31s' has %u peers: virtio over ivshmem needs exactly 2\n",
			d->name, peers);
		return -ENODEV;
	}
	if (!PAGE_ALIGNED(rw) || !PAGE_ALIGNED(output) ||
	    state != round_up_page(4 * peers) ||
	    check_mul_overflow(output, (u64)peers, &outputs) ||
	    check_add_overflow(state, rw, &used) ||
	    check_add_overflow(used, outputs, &used) ||
	    memory != bar_size || !is_power_of_2(bar_size) || used > bar_size ||
	    rw < VIRTIO_IVSHMEM_MIN_RW_SECTION) {
		dev_err(dev,
			"link '%.31s': inconsistent layout: state table %llu, R/W %llu (at least %u), output %llu, memory %llu, BAR2 %llu bytes\n",
			d->name, state, rw, VIRTIO_IVSHMEM_MIN_RW_SECTION,
			output, memory, bar_size);
		return -EINVAL;
	}
	vi->link_vectors = vectors;
	vi->rw_size = rw;
	dev_info(dev, "link '%.31s': virtio front end, peer %u of 2, %u vectors, R/W %llu bytes\n",
		 d->name, vi->id, vectors, rw);
	return 0;
}

static int setup_v1(struct virtio_ivshmem *vi)
{
	struct pci_dev *pdev = vi->pdev;
	u64 bar_size = pci_resource_len(pdev, IVSHMEM_SHMEM_BAR);
	struct link_descriptor descriptor;
	u8 *shmem;
	int ret;

	if (bar_size < LINK_DESCRIPTOR_OFFSET + sizeof(descriptor)) {
		dev_info(&pdev->dev, "BAR2 of %llu bytes holds no link descriptor\n",
			 bar_size);
		return -ENODEV;
	}
	vi->id = readl(vi->regs + IVSHMEM_V1_IV_POSITION);
	ret = pci_request_region(pdev, IVSHMEM_SHMEM_BAR, DRV_NAME);
	if (ret)
		return ret;
	shmem = devm_memremap(&pdev->dev,
			      pci_resource_start(pdev, IVSHMEM_SHMEM_BAR),
			      bar_size, MEMREMAP_WB);
	if (IS_ERR(shmem))
		return PTR_ERR(shmem);
	/* Copied once, then validated: every peer can write these bytes. */
	memcpy(&descriptor, shmem + LINK_DESCRIPTOR_OFFSET, sizeof(descriptor));
	ret = check_descriptor(vi, &descriptor, bar_size);
	if (ret)
		return ret;
	if (vi->id > 1) {
		dev_err(&pdev->dev, "IVPosition %u on a 2-peer link\n", vi->id);
		return -EINVAL;
	}
	vi->partner = 1 - vi->id;
	vi->state_table = (const __le32 *)shmem;
	vi->own_state = (__le32 *)shmem + vi->id;
	vi->rw = shmem + round_up_page(4 * 2);
	vi->device_id = vi->protocol - PROTOCOL_VIRTIO_FRONT_FIRST;
	return 0;
}

static u64 read_cap64(struct pci_dev *pdev, int where)
{
	u32 low, high;

	pci_read_config_dword(pdev, where, &low);
	pci_read_config_dword(pdev, where + 4, &high);
	return ((u64)high << 32) | low;
}

/* UNTESTED: no ivshmem 2.0 device exists to run this on (issue 15). */
static int setup_v2(struct virtio_ivshmem *vi)
{
	struct pci_dev *pdev = vi->pdev;
	u64 state_size, rw_size, output_size, outputs, total, base, limit;
	u32 state_size32, max_peers;
	void *state_table;
	int cap, ret;
	u8 length;

	vi->protocol = pdev->class & 0xffff;
	if (vi->protocol < PROTOCOL_VIRTIO_FRONT_FIRST ||
	    vi->protocol > PROTOCOL_VIRTIO_FRONT_LAST) {
		dev_info(&pdev->dev,
			 "ivshmem v2 with protocol 0x%04x, not a virtio front end: not ours\n",
			 vi->protocol);
		return -ENODEV;
	}

	cap = pci_find_capability(pdev, PCI_CAP_ID_VNDR);
	if (!cap) {
		dev_err(&pdev->dev, "ivshmem v2 without its vendor capability\n");
		return -ENODEV;
	}
	pci_read_config_byte(pdev, cap + IVSHMEM_V2_CAP_LENGTH, &length);
	pci_read_config_dword(pdev, cap + IVSHMEM_V2_CAP_STATE_TABLE_SIZE,
			      &state_size32);
	state_size = state_size32;
	rw_size = read_cap64(pdev, cap + IVSHMEM_V2_CAP_RW_SECTION_SIZE);
	output_size = read_cap64(pdev, cap + IVSHMEM_V2_CAP_OUTPUT_SECTION_SIZE);
	vi->id = readl(vi->regs + IVSHMEM_V2_ID);
	max_peers = readl(vi->regs + IVSHMEM_V2_MAX_PEERS);

	if (pci_resource_len(pdev, IVSHMEM_SHMEM_BAR) != 0) {
		ret = pci_request_region(pdev, IVSHMEM_SHMEM_BAR, DRV_NAME);
		if (ret)
			return ret;
		base = pci_resource_start(pdev, IVSHMEM_SHMEM_BAR);
		limit = pci_resource_len(pdev, IVSHMEM_SHMEM_BAR);
	} else if (length >= IVSHMEM_V2_CAP_LENGTH_WITH_BASE) {
		base = read_cap64(pdev, cap + IVSHMEM_V2_CAP_BASE_ADDRESS);
		limit = U64_MAX; /* the hypervisor vouches for the region */
	} else {
		dev_err(&pdev->dev, "ivshmem v2 with neither BAR2 nor a base address\n");
		return -ENODEV;
	}
	if (max_peers != 2 || vi->id >= 2 || state_size < 4 * 2 ||
	    !PAGE_ALIGNED(base) || !PAGE_ALIGNED(state_size) ||
	    !PAGE_ALIGNED(rw_size) || !PAGE_ALIGNED(output_size) ||
	    rw_size < VIRTIO_IVSHMEM_MIN_RW_SECTION ||
	    check_mul_overflow(output_size, 2ULL, &outputs) ||
	    check_add_overflow(state_size, rw_size, &total) ||
	    check_add_overflow(total, outputs, &total) || total > limit) {
		dev_err(&pdev->dev,
			"ivshmem v2 layout unfit for virtio: id %u of %u peers, state table %llu, R/W %llu (at least %u), output %llu bytes, region %llu bytes\n",
			vi->id, max_peers, state_size, rw_size,
			VIRTIO_IVSHMEM_MIN_RW_SECTION, output_size, limit);
		return -EINVAL;
	}
	state_table = devm_memremap(&pdev->dev, base, state_size, MEMREMAP_WB);
	if (IS_ERR(state_table))
		return PTR_ERR(state_table);
	vi->rw = devm_memremap(&pdev->dev, base + state_size, rw_size,
			       MEMREMAP_WB);
	if (IS_ERR(vi->rw))
		return PTR_ERR(vi->rw);
	vi->state_table = state_table; /* read-only: we write STATE */
	vi->own_state = NULL;
	vi->rw_size = rw_size;
	vi->partner = 1 - vi->id;
	vi->device_id = vi->protocol - PROTOCOL_VIRTIO_FRONT_FIRST;
	/* The partner's vector count is not visible on v2: assume ours. */
	vi->link_vectors = clamp_t(int, pci_msix_vec_count(pdev), 0,
				   LINK_MAX_VECTORS);
	/* One-shot off: a kernel driver takes every interrupt as it comes. */
	pci_write_config_byte(pdev, cap + IVSHMEM_V2_CAP_PRIV_CTRL, 0);
	dev_info(&pdev->dev,
		 "ivshmem v2, peer %u of 2, protocol 0x%04x, R/W %llu bytes\n",
		 vi->id, vi->protocol, rw_size);
	return 0;
}

static void free_irqs(struct virtio_ivshmem *vi)
{
	while (vi->irqs_requested > 0) {
		vi->irqs_requested--;
		free_irq(pci_irq_vector(vi->pdev, vi->irqs_requested),
			 &vi->irqs[vi->irqs_requested]);
	}
	if (vi->nvectors > 0)
		pci_free_irq_vectors(vi->pdev);
	vi->nvectors = 0;
}

static int setup_irqs(struct virtio_ivshmem *vi)
{
	struct pci_dev *pdev = vi->pdev;
	int available = pci_msix_vec_count(pdev);
	int wanted, ret;
	unsigned int i;

	if (available <= 0) {
		dev_err(&pdev->dev, "no MSI-X: virtio over ivshmem needs doorbells (ivshmem-doorbell, not ivshmem-plain)\n");
		return -ENODEV;
	}
	wanted = min_t(int, available, vi->link_vectors);
	ret = pci_alloc_irq_vectors(pdev, 1, wanted, PCI_IRQ_MSIX);
	if (ret < 0) {
		dev_err(&pdev->dev, "cannot enable MSI-X: %d\n", ret);
		return ret;
	}
	vi->nvectors = ret;
	for (i = 0; i < vi->nvectors; i++) {
		vi->irqs[i].vi = vi;
		vi->irqs[i].vector = i;
		ret = request_irq(pci_irq_vector(pdev, i),
				  virtio_ivshmem_interrupt, 0, DRV_NAME,
				  &vi->irqs[i]);
		if (ret) {
			free_irqs(vi);
			return ret;
		}
		vi->irqs_requested = i + 1;
	}
	return 0;
}

static int virtio_ivshmem_probe(struct pci_dev *pdev,
				const struct pci_device_id *id)
{
	struct virtio_ivshmem *vi;
	int ret;

	vi = devm_kzalloc(&pdev->dev, sizeof(*vi), GFP_KERNEL);
	if (!vi)
		return -ENOMEM;
	vi->pdev = pdev;
	vi->version = pdev->vendor == IVSHMEM_V2_VENDOR ? IVSHMEM_V2 :
							  IVSHMEM_V1;
	spin_lock_init(&vi->vq_lock);
	mutex_init(&vi->state_lock);
	INIT_WORK(&vi->state_work, virtio_ivshmem_state_work);

	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	ret = pcim_iomap_regions(pdev, BIT(IVSHMEM_REGS_BAR), DRV_NAME);
	if (ret)
		return ret;
	vi->regs = pcim_iomap_table(pdev)[IVSHMEM_REGS_BAR];
	ret = vi->version == IVSHMEM_V2 ? setup_v2(vi) : setup_v1(vi);
	if (ret)
		return ret;

	ret = setup_pool(vi);
	if (ret)
		return ret;
	pci_set_drvdata(pdev, vi);
	set_dma_ops(&pdev->dev, &ivshmem_dma_ops);
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		goto err_pool;

	/* MSI-X messages are bus-master writes: without this every doorbell
	 * is silently dropped. */
	pci_set_master(pdev);
	ret = setup_irqs(vi);
	if (ret)
		goto err_pool;
	if (vi->version == IVSHMEM_V2)
		writel(1, vi->regs + IVSHMEM_V2_INT_CTRL);

	/* Start from RESET (an earlier driver may have left READY behind);
	 * the work registers the device once the back end is READY. */
	mutex_lock(&vi->state_lock);
	set_own_state(vi, PEER_RESET);
	mutex_unlock(&vi->state_lock);
	dev_info(&pdev->dev,
		 "virtio over ivshmem v%d: peer %u, virtio id %u, %u MSI-X vectors, pool %llu bytes; back end %s\n",
		 vi->version, vi->id, vi->device_id, vi->nvectors,
		 pool_size(vi),
		 partner_state(vi) == PEER_READY ? "READY" : "not READY yet");
	schedule_work(&vi->state_work);
	return 0;

err_pool:
	set_dma_ops(&pdev->dev, NULL);
	pci_set_drvdata(pdev, NULL);
	destroy_pool(vi);
	return ret;
}

static void virtio_ivshmem_remove(struct pci_dev *pdev)
{
	struct virtio_ivshmem *vi = pci_get_drvdata(pdev);

	/* No interrupt schedules the work after this; then no work runs. */
	WRITE_ONCE(vi->removing, true);
	if (vi->version == IVSHMEM_V2)
		writel(0, vi->regs + IVSHMEM_V2_INT_CTRL);
	free_irqs(vi);
	cancel_work_sync(&vi->state_work);

	mutex_lock(&vi->state_lock);
	remove_current(vi); /* resets a live device through the header */
	set_own_state(vi, PEER_RESET);
	mutex_unlock(&vi->state_lock);

	set_dma_ops(&pdev->dev, NULL);
	destroy_pool(vi);
}

/* sysfs, on the PCI device: how much of the pool is in use. */
static ssize_t pool_size_show(struct device *dev,
			      struct device_attribute *attr, char *buf)
{
	struct virtio_ivshmem *vi = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%zu\n", vi ? gen_pool_size(vi->pool) : 0);
}
static DEVICE_ATTR_RO(pool_size);

static ssize_t pool_free_show(struct device *dev,
			      struct device_attribute *attr, char *buf)
{
	struct virtio_ivshmem *vi = dev_get_drvdata(dev);

	return sysfs_emit(buf, "%zu\n", vi ? gen_pool_avail(vi->pool) : 0);
}
static DEVICE_ATTR_RO(pool_free);

static struct attribute *virtio_ivshmem_attrs[] = {
	&dev_attr_pool_size.attr,
	&dev_attr_pool_free.attr,
	NULL,
};
ATTRIBUTE_GROUPS(virtio_ivshmem);

static const struct pci_device_id virtio_ivshmem_ids[] = {
	{ PCI_DEVICE(IVSHMEM_V1_VENDOR, IVSHMEM_V1_DEVICE) },
	{ PCI_DEVICE(IVSHMEM_V2_VENDOR, IVSHMEM_V2_DEVICE),
	  .class = V2_CLASS_IVSHMEM, .class_mask = V2_CLASS_IVSHMEM_MASK },
	{ 0 }
};
MODULE_DEVICE_TABLE(pci, virtio_ivshmem_ids);

static struct pci_driver virtio_ivshmem_driver = {
	.name = DRV_NAME,
	.id_table = virtio_ivshmem_ids,
	.probe = virtio_ivshmem_probe,
	.remove = virtio_ivshmem_remove,
	.dev_groups = virtio_ivshmem_groups,
};
module_pci_driver(virtio_ivshmem_driver);

MODULE_DESCRIPTION("virtio over ivshmem front end (cellink): QEMU ivshmem v1 with a cellink link descriptor, Jailhouse ivshmem 2.0");
MODULE_AUTHOR("cellink");
MODULE_LICENSE("GPL");
