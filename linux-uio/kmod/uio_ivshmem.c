// SPDX-License-Identifier: GPL-2.0
/*
 * uio_ivshmem: a UIO driver with MSI-X for ivshmem devices, written for
 * cellink (spec: docs/guests.md).
 *
 * It binds two devices:
 *  - QEMU's ivshmem v1 (1af4:1110: ivshmem-doorbell, ivshmem-plain);
 *  - the Jailhouse ivshmem 2.0 device (110a:4106) with protocol 0000
 *    (undefined) or 4c11 (cellink). Other v2 protocols bind through new_id:
 *    echo "110a 4106 110a 4106 ffc003 ffffff" > .../uio_ivshmem/new_id
 *
 * A v1 device whose cellink link descriptor (BAR2 + 0x800) says a virtio
 * front-end protocol (0x8000..0xbfff) is declined with -ENODEV: it belongs
 * to virtio_ivshmem, so both modules can be loaded in one guest.
 *
 * UIO maps, each at mmap offset N * PAGE_SIZE:
 *
 *   v1 (QEMU)                        v2 (Jailhouse)
 *   0 "registers"  BAR0              0 "registers"       BAR0
 *   1 "shmem"      BAR2, whole       1 "state_table"     read-only
 *                                    2 "rw_section"      omitted when empty
 *                                    3 "input_sections"  all peers' outputs,
 *                                                        read-only
 *                                    4 "output_section"  this peer's own
 *
 * The v2 maps are numbered densely: without an R/W section the input
 * sections are map 2 and the own output section is map 3. The map names in
 * /sys/class/uio/uioN/maps/mapM/name say which is which. A register map
 * smaller than a page shares its page with whatever lies next to the BAR;
 * user space adds maps/map0/offset to the mapped address.
 *
 * Interrupts: MSI-X with every vector the device offers, all of them
 * coalesced into the one UIO event, so read() on /dev/uioN returns after any
 * doorbell. Bus Master is set: MSI-X messages are bus-master writes and are
 * dropped without it. A device without MSI-X (ivshmem-plain) registers with
 * no interrupt, and read() fails with EIO.
 *
 * Writing an s32 to /dev/uioN (UIO irqcontrol):
 *   v2: 1 writes Interrupt Control = 1 (re-arm), 0 disables. The driver
 *       turns on one-shot mode, so each delivered interrupt clears the
 *       enable bit and user space re-arms after every wait (or writes
 *       Interrupt Control through map 0 itself). The first open arms.
 *   v1: there is no Interrupt Control register; 0 masks every vector and 1
 *       unmasks them. A doorbell that arrives while masked is delivered on
 *       unmask, not lost.
 * Closing the last file of a v2 device writes State = 0, as the peer has
 * gone away.
 */

#include <linux/io.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/overflow.h>
#include <linux/pci.h>
#include <linux/uio_driver.h>

#define DRV_NAME "uio_ivshmem"

/* ivshmem v1 (QEMU docs/specs/ivshmem-spec.rst) */
#define IVSHMEM_V1_VENDOR 0x1af4
#define IVSHMEM_V1_DEVICE 0x1110
#define IVSHMEM_V1_IV_POSITION 0x08

/* The cellink link descriptor (ivshmem/include/cellink/ivshmem/
 * link_descriptor.hpp): its magic and protocol id. */
#define LINK_DESCRIPTOR_OFFSET 0x800
#define LINK_DESCRIPTOR_SIZE 0x80
#define LINK_DESCRIPTOR_MAGIC 0x4b4e4c43 /* "CLNK" */
#define LINK_DESCRIPTOR_PROTOCOL 0x10
#define PROTOCOL_VIRTIO_FRONT_FIRST 0x8000
#define PROTOCOL_VIRTIO_FRONT_LAST 0xbfff

/* ivshmem 2.0 (Jailhouse Documentation/ivshmem-v2-specification.md) */
#define IVSHMEM_V2_VENDOR 0x110a
#define IVSHMEM_V2_DEVICE 0x4106
#define IVSHMEM_V2_ID 0x00
#define IVSHMEM_V2_MAX_PEERS 0x04
#define IVSHMEM_V2_INT_CTRL 0x08
#define IVSHMEM_V2_STATE 0x10
#define IVSHMEM_V2_CLASS_UNDEFINED 0xff0000
#define IVSHMEM_V2_CLASS_CELLINK 0xff4c11

/* v2 vendor capability (PCI_CAP_ID_VNDR), offsets from its start */
#define IVSHMEM_V2_CAP_LENGTH 0x02
#define IVSHMEM_V2_CAP_PRIV_CTRL 0x03
#define IVSHMEM_V2_CAP_STATE_TABLE_SIZE 0x04
#define IVSHMEM_V2_CAP_RW_SECTION_SIZE 0x08
#define IVSHMEM_V2_CAP_OUTPUT_SECTION_SIZE 0x10
#define IVSHMEM_V2_CAP_BASE_ADDRESS 0x18
#define IVSHMEM_V2_CAP_LENGTH_WITH_BASE 0x20
#define IVSHMEM_V2_PRIV_CTRL_ONE_SHOT 0x01

#define IVSHMEM_REGS_BAR 0
#define IVSHMEM_SHMEM_BAR 2

enum ivshmem_version { IVSHMEM_V1 = 1, IVSHMEM_V2 = 2 };

struct ivshmem_uio {
	struct uio_info info;
	struct pci_dev *pdev;
	enum ivshmem_version version;
	void __iomem *regs;
	int vectors; /* MSI-X vectors with a handler; 0 without MSI-X */
	u32 read_only_maps; /* bit M: map M rejects writable mappings */

	/* Serialises irqcontrol, open and release; protects the two below. */
	struct mutex lock;
	unsigned int open_count;
	bool v1_masked; /* v1: every vector is disabled through irqcontrol */
};

static irqreturn_t ivshmem_uio_interrupt(int irq, void *data)
{
	struct ivshmem_uio *dev = data;

	/* Every vector is one UIO event; MSI-X is edge-triggered, so there is
	 * nothing to acknowledge. */
	uio_event_notify(&dev->info);
	return IRQ_HANDLED;
}

static void ivshmem_uio_mask_v1(struct ivshmem_uio *dev, bool mask)
{
	int i;

	if (mask == dev->v1_masked)
		return;
	for (i = 0; i < dev->vectors; i++) {
		int irq = pci_irq_vector(dev->pdev, i);

		if (mask)
			disable_irq(irq);
		else
			enable_irq(irq);
	}
	dev->v1_masked = mask;
}

static int ivshmem_uio_irqcontrol(struct uio_info *info, s32 irq_on)
{
	struct ivshmem_uio *dev = container_of(info, struct ivshmem_uio, info);

	if (irq_on != 0 && irq_on != 1)
		return -EINVAL;
	mutex_lock(&dev->lock);
	if (dev->version == IVSHMEM_V2)
		writel(irq_on, dev->regs + IVSHMEM_V2_INT_CTRL);
	else
		ivshmem_uio_mask_v1(dev, irq_on == 0);
	mutex_unlock(&dev->lock);
	return 0;
}

static int ivshmem_uio_open(struct uio_info *info, struct inode *inode)
{
	struct ivshmem_uio *dev = container_of(info, struct ivshmem_uio, info);

	mutex_lock(&dev->lock);
	/* One-shot mode left the device disarmed after the last user. */
	if (dev->open_count++ == 0 && dev->version == IVSHMEM_V2 &&
	    dev->vectors > 0)
		writel(1, dev->regs + IVSHMEM_V2_INT_CTRL);
	mutex_unlock(&dev->lock);
	return 0;
}

static int ivshmem_uio_release(struct uio_info *info, struct inode *inode)
{
	struct ivshmem_uio *dev = container_of(info, struct ivshmem_uio, info);

	mutex_lock(&dev->lock);
	if (--dev->open_count == 0) {
		if (dev->version == IVSHMEM_V2) {
			/* The peer is gone: tell the others (the device fires
			 * vector 0 on them) and stop our interrupts. */
			writel(0, dev->regs + IVSHMEM_V2_STATE);
			writel(0, dev->regs + IVSHMEM_V2_INT_CTRL);
		} else {
			/* The next user starts unmasked. */
			ivshmem_uio_mask_v1(dev, false);
		}
	}
	mutex_unlock(&dev->lock);
	return 0;
}

static const struct vm_operations_struct ivshmem_uio_vm_ops = {
#ifdef CONFIG_HAVE_IOREMAP_PROT
	.access = generic_access_phys, /* lets ptrace and gdb read the maps */
#endif
};

static int ivshmem_uio_mmap(struct uio_info *info, struct vm_area_struct *vma)
{
	struct ivshmem_uio *dev = container_of(info, struct ivshmem_uio, info);
	unsigned long index = vma->vm_pgoff;
	unsigned long pages;
	struct uio_mem *mem;

	/* The UIO core already picked the map from vm_pgoff and checked the
	 * length; check again so this function is safe on its own. */
	if (index >= MAX_UIO_MAPS || info->mem[index].size == 0)
		return -EINVAL;
	mem = &info->mem[index];
	pages = PAGE_ALIGN(offset_in_page(mem->addr) + mem->size) >> PAGE_SHIFT;
	if (vma_pages(vma) > pages)
		return -EINVAL;

	if (dev->read_only_maps & BIT(index)) {
		if (vma->vm_flags & VM_WRITE)
			return -EPERM;
		vma->vm_flags &= ~VM_MAYWRITE; /* no mprotect() to writable */
	}

	/* Registers are MMIO and must not be cached; the shared memory is RAM
	 * behind the BAR and is mapped cacheable, as the peers map it. */
	if (index == 0)
		vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
	vma->vm_ops = &ivshmem_uio_vm_ops;
	return io_remap_pfn_range(vma, vma->vm_start, mem->addr >> PAGE_SHIFT,
				  vma->vm_end - vma->vm_start,
				  vma->vm_page_prot);
}

static void ivshmem_uio_add_map(struct ivshmem_uio *dev, int *count,
				const char *name, phys_addr_t addr,
				resource_size_t size, bool read_only)
{
	struct uio_mem *mem;

	if (size == 0)
		return; /* maps stay dense: an empty section takes no number */
	mem = &dev->info.mem[*count];
	mem->name = name;
	mem->addr = addr;
	mem->size = size;
	mem->memtype = UIO_MEM_PHYS;
	if (read_only)
		dev->read_only_maps |= BIT(*count);
	(*count)++;
}

/* Whether a v1 link descriptor says virtio front end: that device is
 * virtio_ivshmem's. Only the magic and the protocol are read; user space
 * validates the whole descriptor. */
static bool ivshmem_uio_v1_is_virtio(struct pci_dev *pdev)
{
	void __iomem *descriptor;
	u32 magic, protocol;

	if (pci_resource_len(pdev, IVSHMEM_SHMEM_BAR) <
	    LINK_DESCRIPTOR_OFFSET + LINK_DESCRIPTOR_SIZE)
		return false;
	descriptor = pci_iomap_range(pdev, IVSHMEM_SHMEM_BAR,
				     LINK_DESCRIPTOR_OFFSET,
				     LINK_DESCRIPTOR_SIZE);
	if (!descriptor)
		return false;
	magic = readl(descriptor);
	protocol = readl(descriptor + LINK_DESCRIPTOR_PROTOCOL);
	pci_iounmap(pdev, descriptor);
	return magic == LINK_DESCRIPTOR_MAGIC &&
	       protocol >= PROTOCOL_VIRTIO_FRONT_FIRST &&
	       protocol <= PROTOCOL_VIRTIO_FRONT_LAST;
}

static int ivshmem_uio_setup_v1(struct ivshmem_uio *dev)
{
	struct pci_dev *pdev = dev->pdev;
	int count = 0;
	int ret;

	if (pci_resource_len(pdev, IVSHMEM_SHMEM_BAR) == 0) {
		dev_err(&pdev->dev, "ivshmem v1 without BAR2: no shared memory\n");
		return -ENODEV;
	}
	if (ivshmem_uio_v1_is_virtio(pdev)) {
		dev_info(&pdev->dev,
			 "link descriptor says virtio front end: leaving it to virtio_ivshmem\n");
		return -ENODEV;
	}
	ret = pci_request_region(pdev, IVSHMEM_SHMEM_BAR, DRV_NAME);
	if (ret)
		return ret;

	ivshmem_uio_add_map(dev, &count, "registers",
			    pci_resource_start(pdev, IVSHMEM_REGS_BAR),
			    pci_resource_len(pdev, IVSHMEM_REGS_BAR), false);
	ivshmem_uio_add_map(dev, &count, "shmem",
			    pci_resource_start(pdev, IVSHMEM_SHMEM_BAR),
			    pci_resource_len(pdev, IVSHMEM_SHMEM_BAR), false);
	dev_info(&pdev->dev, "ivshmem v1, IVPosition %u, %llu bytes shared\n",
		 readl(dev->regs + IVSHMEM_V1_IV_POSITION),
		 (unsigned long long)pci_resource_len(pdev, IVSHMEM_SHMEM_BAR));
	return 0;
}

static u64 ivshmem_uio_read_cap64(struct pci_dev *pdev, int where)
{
	u32 low, high;

	pci_read_config_dword(pdev, where, &low);
	pci_read_config_dword(pdev, where + 4, &high);
	return ((u64)high << 32) | low;
}

static int ivshmem_uio_setup_v2(struct ivshmem_uio *dev)
{
	struct pci_dev *pdev = dev->pdev;
	u64 state_size, rw_size, output_size, inputs_size, total, base, limit;
	u32 state_size32, id, max_peers;
	int cap, count = 0, ret;
	u8 length;

	cap = pci_find_capability(pdev, PCI_CAP_ID_VNDR);
	if (!cap) {
		dev_err(&pdev->dev, "ivshmem v2 without its vendor capability\n");
		return -ENODEV;
	}
	pci_read_config_byte(pdev, cap + IVSHMEM_V2_CAP_LENGTH, &length);
	pci_read_config_dword(pdev, cap + IVSHMEM_V2_CAP_STATE_TABLE_SIZE,
			      &state_size32);
	state_size = state_size32;
	rw_size = ivshmem_uio_read_cap64(pdev,
					 cap + IVSHMEM_V2_CAP_RW_SECTION_SIZE);
	output_size = ivshmem_uio_read_cap64(
		pdev, cap + IVSHMEM_V2_CAP_OUTPUT_SECTION_SIZE);
	id = readl(dev->regs + IVSHMEM_V2_ID);
	max_peers = readl(dev->regs + IVSHMEM_V2_MAX_PEERS);

	if (pci_resource_len(pdev, IVSHMEM_SHMEM_BAR) != 0) {
		ret = pci_request_region(pdev, IVSHMEM_SHMEM_BAR, DRV_NAME);
		if (ret)
			return ret;
		base = pci_resource_start(pdev, IVSHMEM_SHMEM_BAR);
		limit = pci_resource_len(pdev, IVSHMEM_SHMEM_BAR);
	} else if (length >= IVSHMEM_V2_CAP_LENGTH_WITH_BASE) {
		base = ivshmem_uio_read_cap64(pdev,
					      cap + IVSHMEM_V2_CAP_BASE_ADDRESS);
		limit = U64_MAX; /* the hypervisor vouches for the region */
	} else {
		dev_err(&pdev->dev, "ivshmem v2 with neither BAR2 nor a base address\n");
		return -ENODEV;
	}

	/* The sizes come from the hypervisor, but a wrong one must not let
	 * user space map memory beyond the region. */
	if (max_peers < 2 || id >= max_peers || state_size == 0 ||
	    !PAGE_ALIGNED(base) || !PAGE_ALIGNED(state_size) ||
	    !PAGE_ALIGNED(rw_size) || !PAGE_ALIGNED(output_size) ||
	    check_mul_overflow(output_size, (u64)max_peers, &inputs_size) ||
	    check_add_overflow(state_size, rw_size, &total) ||
	    check_add_overflow(total, inputs_size, &total) || total > limit) {
		dev_err(&pdev->dev,
			"inconsistent ivshmem v2 layout: id %u of %u peers, state table %llu, R/W %llu, output %llu bytes, region %llu bytes\n",
			id, max_peers, state_size, rw_size, output_size, limit);
		return -EINVAL;
	}

	ivshmem_uio_add_map(dev, &count, "registers",
			    pci_resource_start(pdev, IVSHMEM_REGS_BAR),
			    pci_resource_len(pdev, IVSHMEM_REGS_BAR), false);
	ivshmem_uio_add_map(dev, &count, "state_table", base, state_size, true);
	ivshmem_uio_add_map(dev, &count, "rw_section", base + state_size,
			    rw_size, false);
	ivshmem_uio_add_map(dev, &count, "input_sections",
			    base + state_size + rw_size, inputs_size, true);
	ivshmem_uio_add_map(dev, &count, "output_section",
			    base + state_size + rw_size + id * output_size,
			    output_size, false);

	/* One-shot: each delivered interrupt clears Interrupt Control, so a
	 * peer cannot storm us while user space is not waiting. */
	pci_write_config_byte(pdev, cap + IVSHMEM_V2_CAP_PRIV_CTRL,
			      IVSHMEM_V2_PRIV_CTRL_ONE_SHOT);
	dev_info(&pdev->dev, "ivshmem v2, peer %u of %u\n", id, max_peers);
	return 0;
}

static int ivshmem_uio_setup_irqs(struct ivshmem_uio *dev)
{
	struct pci_dev *pdev = dev->pdev;
	int vectors, i, ret;

	vectors = pci_msix_vec_count(pdev);
	if (vectors <= 0) {
		dev_info(&pdev->dev, "no MSI-X: registered without interrupts\n");
		dev->info.irq = UIO_IRQ_NONE;
		return 0;
	}
	ret = pci_alloc_irq_vectors(pdev, vectors, vectors, PCI_IRQ_MSIX);
	if (ret < 0) {
		dev_err(&pdev->dev, "cannot enable %d MSI-X vectors: %d\n",
			vectors, ret);
		return ret;
	}
	for (i = 0; i < vectors; i++) {
		ret = devm_request_irq(&pdev->dev, pci_irq_vector(pdev, i),
				       ivshmem_uio_interrupt, 0, DRV_NAME, dev);
		if (ret)
			return ret;
		dev->vectors = i + 1;
	}
	dev->info.irq = UIO_IRQ_CUSTOM;
	return 0;
}

static int ivshmem_uio_probe(struct pci_dev *pdev,
			     const struct pci_device_id *id)
{
	struct ivshmem_uio *dev;
	int ret;

	dev = devm_kzalloc(&pdev->dev, sizeof(*dev), GFP_KERNEL);
	if (!dev)
		return -ENOMEM;
	dev->pdev = pdev;
	dev->version = pdev->vendor == IVSHMEM_V2_VENDOR ? IVSHMEM_V2 :
							   IVSHMEM_V1;
	mutex_init(&dev->lock);

	/* Managed: the regions, the MSI-X vectors and Bus Master are undone
	 * when the device is unbound, after the devm IRQs are freed. */
	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	ret = pcim_iomap_regions(pdev, BIT(IVSHMEM_REGS_BAR), DRV_NAME);
	if (ret)
		return ret;
	dev->regs = pcim_iomap_table(pdev)[IVSHMEM_REGS_BAR];

	ret = dev->version == IVSHMEM_V2 ? ivshmem_uio_setup_v2(dev) :
					   ivshmem_uio_setup_v1(dev);
	if (ret)
		return ret;

	/* MSI-X messages are bus-master writes: without this every doorbell
	 * is silently dropped. */
	pci_set_master(pdev);
	ret = ivshmem_uio_setup_irqs(dev);
	if (ret)
		return ret;

	dev->info.name = DRV_NAME;
	dev->info.version = "1";
	dev->info.mmap = ivshmem_uio_mmap;
	dev->info.open = ivshmem_uio_open;
	dev->info.release = ivshmem_uio_release;
	if (dev->vectors > 0)
		dev->info.irqcontrol = ivshmem_uio_irqcontrol;

	/* Registered last, so it is unregistered first on unbind, while the
	 * IRQs that call uio_event_notify() are still valid. */
	ret = devm_uio_register_device(&pdev->dev, &dev->info);
	if (ret)
		return ret;
	pci_set_drvdata(pdev, dev);
	return 0;
}

static void ivshmem_uio_remove(struct pci_dev *pdev)
{
	struct ivshmem_uio *dev = pci_get_drvdata(pdev);

	/* Stop the doorbells before devres frees the handlers, and leave
	 * no vector disabled behind. */
	mutex_lock(&dev->lock);
	if (dev->version == IVSHMEM_V2) {
		writel(0, dev->regs + IVSHMEM_V2_INT_CTRL);
		writel(0, dev->regs + IVSHMEM_V2_STATE);
	} else {
		ivshmem_uio_mask_v1(dev, false);
	}
	mutex_unlock(&dev->lock);
}

static const struct pci_device_id ivshmem_uio_ids[] = {
	{ PCI_DEVICE(IVSHMEM_V1_VENDOR, IVSHMEM_V1_DEVICE) },
	{ PCI_DEVICE(IVSHMEM_V2_VENDOR, IVSHMEM_V2_DEVICE),
	  .class = IVSHMEM_V2_CLASS_UNDEFINED, .class_mask = 0xffffff },
	{ PCI_DEVICE(IVSHMEM_V2_VENDOR, IVSHMEM_V2_DEVICE),
	  .class = IVSHMEM_V2_CLASS_CELLINK, .class_mask = 0xffffff },
	{ 0 }
};
MODULE_DEVICE_TABLE(pci, ivshmem_uio_ids);

static struct pci_driver ivshmem_uio_driver = {
	.name = DRV_NAME,
	.id_table = ivshmem_uio_ids,
	.probe = ivshmem_uio_probe,
	.remove = ivshmem_uio_remove,
};
module_pci_driver(ivshmem_uio_driver);

MODULE_DESCRIPTION("UIO driver with MSI-X for ivshmem v1 (QEMU) and v2 (Jailhouse) devices");
MODULE_AUTHOR("cellink");
MODULE_LICENSE("GPL");
