#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <utility>

#include "common.h"

namespace srbench {

namespace {

bool parse_range(const std::string& v) {
  const auto comma = v.find(',');
  if (comma == std::string::npos) return false;
  try {
    std::size_t used = 0;
    std::stod(v.substr(0, comma), &used);
    if (used != comma) return false;
    const std::string hi = v.substr(comma + 1);
    std::stod(hi, &used);
    return used == hi.size();
  } catch (const std::exception&) {
    return false;
  }
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

}  // namespace

ModelInfo parse_model_info(const std::map<std::string, std::string>& props, const std::string& source) {
  // Same keys and order as REQUIRED_KEYS in runtime/metadata.py.
  static const char* required[] = {"srdeploy.format",  "srdeploy.scale",          "srdeploy.input_range",
                                   "srdeploy.output_range", "srdeploy.channel_order", "srdeploy.layout",
                                   "srdeploy.receptive_radius"};
  std::string missing;
  for (const char* key : required) {
    if (!props.count(key)) missing += (missing.empty() ? "" : ", ") + std::string(key);
  }
  if (!missing.empty()) {
    throw UserError(source + ": not an srdeploy model: metadata lacks " + missing +
                    ". Export it with `srdeploy export CHECKPOINT -o model.onnx`, or add the keys with "
                    "srdeploy.export.onnx_export.add_metadata(path, ModelInfo(scale=..., receptive_radius=...)).");
  }
  const std::string& format = props.at("srdeploy.format");
  if (format != "srdeploy.sr-model/1") {
    throw UserError(source + ": metadata format '" + format + "' is not 'srdeploy.sr-model/1'; re-export the model");
  }
  ModelInfo info;
  info.props = props;
  info.source = source;
  const std::string& scale = props.at("srdeploy.scale");
  try {
    std::size_t used = 0;
    info.scale = std::stoi(scale, &used);
    if (used != scale.size() || info.scale < 1) throw std::invalid_argument("scale");
  } catch (const std::exception&) {
    throw UserError(source + ": malformed srdeploy metadata: srdeploy.scale='" + scale +
                    "' is not a positive integer; re-export the model");
  }
  for (const char* key : {"srdeploy.input_range", "srdeploy.output_range"}) {
    if (!parse_range(props.at(key))) {
      throw UserError(source + ": malformed srdeploy metadata: " + key + "='" + props.at(key) +
                      "' is not 'lo,hi'; re-export the model");
    }
  }
  if (props.at("srdeploy.layout") != "NCHW") {
    throw UserError(source + ": srdeploy.layout is '" + props.at("srdeploy.layout") +
                    "'; srbench feeds NCHW float32 input");
  }
  const std::string& order = props.at("srdeploy.channel_order");
  if (order != "RGB" && order != "GRAY") {  // CHANNEL_ORDERS in runtime/metadata.py
    throw UserError(source + ": srdeploy.channel_order is '" + order + "', not RGB or GRAY; re-export the model");
  }
  info.channels = order == "GRAY" ? 1 : 3;
  auto it = props.find("srdeploy.precision");
  if (it != props.end() && !it->second.empty()) info.precision = it->second;
  if (info.precision != "fp32" && info.precision != "fp16" && info.precision != "bf16") {
    throw UserError(source + ": srdeploy.precision='" + info.precision + "' is not fp32, fp16 or bf16");
  }
  it = props.find("srdeploy.arch");
  if (it != props.end()) info.arch = it->second;
  return info;
}

std::vector<float> deterministic_input(std::size_t count) {
  std::vector<float> x(count);
  for (std::size_t i = 0; i < count; ++i) {
    // 64-bit index arithmetic: (i*37 + 11) must not wrap for large batches.
    x[i] = static_cast<float>((static_cast<std::uint64_t>(i) * 37u + 11u) % 256u) / 255.0f;
  }
  return x;
}

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  // numpy's default ("linear"): position (n-1)*q between the two neighbouring order statistics.
  const double pos = (static_cast<double>(sorted.size()) - 1.0) * q / 100.0;
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

Stats compute_stats(std::vector<double> samples) {
  Stats s;
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  s.median = percentile(samples, 50.0);
  s.p90 = percentile(samples, 90.0);
  double sum = 0.0;
  for (double v : samples) sum += v;
  s.mean = sum / static_cast<double>(samples.size());
  s.min = samples.front();
  s.max = samples.back();
  return s;
}

std::string hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    // x86: "model name"; some ARM kernels: "Model" or "Processor".
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = trim(line.substr(0, colon));
    if (key == "model name" || key == "Model" || key == "Processor" || key == "cpu model") {
      const std::string v = trim(line.substr(colon + 1));
      if (!v.empty()) return v;
    }
  }
  utsname u{};
  if (uname(&u) == 0) return u.machine;
  return "unknown";
}

int logical_cores() {
  const long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n > 0) return static_cast<int>(n);
  const unsigned h = std::thread::hardware_concurrency();
  return h ? static_cast<int>(h) : 1;
}

int physical_cores() {
  // Distinct (physical id, core id) pairs; ONNX Runtime's default intra-op thread count is the
  // number of physical cores, so the same default here keeps C++ and Python comparable.
  std::ifstream f("/proc/cpuinfo");
  std::string line, phys = "0";
  std::set<std::pair<std::string, std::string>> cores;
  while (std::getline(f, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = trim(line.substr(0, colon));
    const std::string v = trim(line.substr(colon + 1));
    if (key == "physical id") phys = v;
    if (key == "core id") cores.emplace(phys, v);
  }
  const int logical = logical_cores();
  if (cores.empty()) return logical;
  return std::max(1, std::min(static_cast<int>(cores.size()), logical));
}

std::string os_description() {
  std::string out;
  utsname u{};
  if (uname(&u) == 0) out = std::string(u.sysname) + " " + u.release + " " + u.machine;
  std::ifstream f("/etc/os-release");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("PRETTY_NAME=", 0) == 0) {
      std::string v = line.substr(12);
      if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'')) v = v.substr(1, v.size() - 2);
      out += " (" + v + ")";
      break;
    }
  }
  return out.empty() ? "unknown" : out;
}

std::string compiler_description() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return std::string("GCC ") + __VERSION__;
#elif defined(_MSC_VER)
  return "MSVC " + std::to_string(_MSC_VER);
#else
  return "unknown";
#endif
}

std::string utc_timestamp() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void write_file_atomic(const std::string& path, const std::string& text) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  fs::path dir = target.parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw UserError("cannot create folder " + dir.string() + " for " + path + ": " + ec.message());
  const fs::path tmp = dir / ("." + target.filename().string() + "." + std::to_string(getpid()) + ".tmp");
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw UserError("cannot write " + tmp.string() + ": " + std::strerror(errno));
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                  fsync(fileno(f)) == 0;
  const int saved = errno;
  if (std::fclose(f) != 0 || !ok) {
    std::remove(tmp.c_str());
    throw UserError("cannot write " + tmp.string() + ": " + std::strerror(saved));
  }
  if (std::rename(tmp.c_str(), target.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw UserError("cannot rename " + tmp.string() + " to " + path + ": " + std::strerror(err));
  }
}

}  // namespace srbench
