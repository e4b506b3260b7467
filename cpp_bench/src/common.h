// Shared pieces of srbench: options, the srdeploy model contract, the backend interface,
// statistics and machine facts. Backends (ONNX Runtime, TensorRT) live in their own files.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "json.h"

namespace srbench {

constexpr const char* kVersion = "0.1.0";
constexpr const char* kSchema = "srdeploy.bench/1";

// A problem the user can fix (bad flag, missing file, wrong model): printed without noise, exit 1.
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A bad command line: exit 2 with a usage hint.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string model;
  std::string backend = "ort";  // ort | trt
  std::string device = "cpu";   // cpu | cuda | cuda:N
  int device_id = 0;
  int batch = 1;
  int width = 0;
  int height = 0;
  int warmup = 5;
  int iters = 30;
  int threads = 0;  // 0: physical cores (what ONNX Runtime picks by default), resolved in main
  std::string json_path;
  std::string precision;  // declared precision (TensorRT engines); empty: from metadata
  std::string meta_path;  // TensorRT: where the srdeploy metadata is (sidecar .json or the .onnx)
  bool quiet = false;
  bool peak = false;          // --peak: measure the FP32 FMA peak instead of a model
  double peak_seconds = 1.5;  // --seconds
};

// The srdeploy contract read from a model's metadata (runtime/metadata.py is the reference).
struct ModelInfo {
  std::map<std::string, std::string> props;
  int scale = 0;
  int channels = 3;  // 1 for a GRAY model (srdeploy.channel_order), else 3
  std::string precision = "fp32";
  std::string arch;
  std::string source;  // where the metadata came from (for messages and the JSON)
};

// Validates srdeploy metadata_props like ModelInfo.from_props in Python; throws UserError naming
// `source` and saying how to fix it.
ModelInfo parse_model_info(const std::map<std::string, std::string>& props, const std::string& source);

// The deterministic benchmark input shared with Python: x.flat[i] = ((i*37 + 11) % 256) / 255.
std::vector<float> deterministic_input(std::size_t count);

// One loaded model on one backend. prepare() fixes the input shape and places the input where the
// backend wants it (not timed); run() is exactly what "model_only" times.
class Backend {
 public:
  virtual ~Backend() = default;
  // Places `input` (shape in_shape, NCHW float32) and allocates the output (expected shape
  // out_shape); throws UserError when the model cannot take that shape or returns another one.
  virtual void prepare(const std::vector<std::int64_t>& in_shape, const std::vector<float>& input,
                       const std::vector<std::int64_t>& out_shape) = 0;
  // One synchronous inference on the prepared input.
  virtual void run() = 0;
  // Sum of all output values of the most recent run, accumulated in double (not timed).
  virtual double output_sum() = 0;

  ModelInfo info;
  std::string backend;    // schema enum: onnxruntime | tensorrt
  std::string device;     // cpu | cuda:0 ...
  std::vector<std::string> providers;
  Json threads = Json::object();
  std::map<std::string, std::string> versions;
  std::string gpu;        // empty: none
  std::string io;         // what model_only includes about memory placement
};

std::unique_ptr<Backend> open_onnxruntime(const Options& opt);
// Reads srdeploy metadata of an ONNX file through ONNX Runtime (used for TensorRT sidecars too).
std::map<std::string, std::string> onnx_metadata_props(const std::string& path);
std::string onnxruntime_version();
std::vector<std::string> onnxruntime_available_providers();
int onnxruntime_header_api_version();

#ifdef SRBENCH_HAVE_TENSORRT
std::unique_ptr<Backend> open_tensorrt(const Options& opt);
#endif

// Statistics over per-iteration latencies (ms). Percentiles interpolate linearly like numpy.
struct Stats {
  double median = 0, p90 = 0, mean = 0, min = 0, max = 0;
};
Stats compute_stats(std::vector<double> samples_ms);
double percentile(const std::vector<double>& sorted, double q);

// Machine and build facts for the JSON.
std::string hostname();
std::string cpu_model();
int logical_cores();
int physical_cores();
std::string os_description();
std::string compiler_description();
std::string utc_timestamp();

// Writes text to path via a temporary file in the same folder and rename(), so an existing
// result is never left half-written.
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace srbench
