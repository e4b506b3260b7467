// Minimal SHA-256 (FIPS 180-4), so the benchmark can record the model's hash without extra
// libraries. Streaming interface plus a file helper.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace srbench {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, std::size_t size);
  // Finishes the hash; the object must not be updated afterwards.
  std::array<std::uint8_t, 32> digest();
  std::string hexdigest();

 private:
  void compress(const std::uint8_t* block);

  std::array<std::uint32_t, 8> state_;
  std::array<std::uint8_t, 64> buffer_{};
  std::size_t buffered_ = 0;
  std::uint64_t total_bytes_ = 0;
};

// Hex SHA-256 of a whole file; throws std::runtime_error naming the file when it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace srbench
