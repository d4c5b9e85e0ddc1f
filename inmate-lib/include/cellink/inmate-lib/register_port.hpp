// RegisterPort: how an inmate's device driver reaches a BAR of 32-bit
// registers. On hardware (and under QEMU) it is MmioRegisterPort, one
// volatile access per call; a hosted unit test puts a model of the device
// behind the same interface, so the driver's register protocol is tested
// without a device.
//
// Offsets are byte offsets into the BAR, 4-byte aligned. A port does not
// check them: the drivers use only the offsets of their register maps.
//
// Freestanding: no exceptions, no heap, no libc.
#pragma once

#include <cstdint>

#include "cellink/inmate-lib/mmio.hpp"

namespace cellink::inmate {

class RegisterPort {
 public:
  RegisterPort(const RegisterPort&) = delete;
  RegisterPort& operator=(const RegisterPort&) = delete;

  [[nodiscard]] virtual std::uint32_t read32(std::uint32_t offset) noexcept = 0;
  virtual void write32(std::uint32_t offset, std::uint32_t value) noexcept = 0;

 protected:
  RegisterPort() = default;
  // Not virtual: nobody deletes a port through this interface (an inmate has
  // no operator delete).
  ~RegisterPort() = default;
};

// The registers mapped uncached at `base` (map_range(..., Caching::uncached)).
class MmioRegisterPort final : public RegisterPort {
 public:
  MmioRegisterPort() = default;
  // Points the port at registers mapped uncached at `base`.
  void attach(std::uint64_t base) noexcept { base_ = base; }

  [[nodiscard]] std::uint32_t read32(std::uint32_t offset) noexcept override {
    return mmio_read32(base_ + offset);
  }
  void write32(std::uint32_t offset, std::uint32_t value) noexcept override {
    mmio_write32(base_ + offset, value);
  }

 private:
  std::uint64_t base_ = 0;
};

}  // namespace cellink::inmate
