// tests/support/cuda_device_buffer.h — device memory for the CUDA tests (only with
// KVTIER_HAVE_CUDA): filled from a host vector, or poisoned (0xff: NaN in f32 and f16, -1 in
// int32) so outputs a kernel forgot to write show up.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cuda/cuda_ops.h"

namespace kvtier::testing {

using kernels::cuda::CudaCopyToDevice;
using kernels::cuda::CudaCopyToHost;
using kernels::cuda::CudaFree;
using kernels::cuda::CudaMalloc;
using kernels::cuda::CudaSynchronize;

class DeviceBuffer {
 public:
  template <typename T>
  explicit DeviceBuffer(const std::vector<T>& host) : bytes_(host.size() * sizeof(T)) {
    Allocate();
    if (ptr_ != nullptr) {
      EXPECT_TRUE(CudaCopyToDevice(ptr_, host.data(), bytes_).ok());
    }
  }
  explicit DeviceBuffer(size_t bytes, int poison = 0xff) : bytes_(bytes) {
    Allocate();
    // Poisoned (0xff bytes: NaN in f32 and f16, -1 in int32) so unwritten outputs show.
    if (ptr_ != nullptr) {
      std::vector<uint8_t> fill(bytes_, static_cast<uint8_t>(poison));
      EXPECT_TRUE(CudaCopyToDevice(ptr_, fill.data(), bytes_).ok());
    }
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) (void)CudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  template <typename T>
  T* get() const {
    return static_cast<T*>(ptr_);
  }
  template <typename T>
  std::vector<T> ToHost() const {
    std::vector<T> host(bytes_ / sizeof(T));
    EXPECT_TRUE(CudaSynchronize(nullptr).ok());
    EXPECT_TRUE(CudaCopyToHost(host.data(), ptr_, bytes_).ok());
    return host;
  }

 private:
  void Allocate() {
    auto ptr = CudaMalloc(std::max<size_t>(bytes_, 1));
    EXPECT_TRUE(ptr.ok()) << ptr.status().ToString();
    if (ptr.ok()) ptr_ = *ptr;
  }
  size_t bytes_ = 0;
  void* ptr_ = nullptr;
};

}  // namespace kvtier::testing
