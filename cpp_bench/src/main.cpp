// srbench: C++ throughput benchmark for srdeploy models. Measures model-only inference the same
// way as `srdeploy bench` (warm-up, N timed iterations, median/p90 latency, fps, megapixels/s) and
// writes the shared JSON schema srdeploy.bench/1 (runtime/bench_schema.json).

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "common.h"
#include "peak.h"
#include "sha256.h"

namespace srbench {
namespace {

const char* kUsage =
    "usage: srbench --model FILE --size WxH [--batch N] [--warmup N] [--iters N] [--json FILE]\n"
    "               [--threads N] [--backend ort|trt] [--device cpu|cuda|cuda:N]\n"
    "               [--meta FILE] [--precision fp32|fp16|bf16] [--quiet]\n"
    "       srbench --peak [--threads N] [--seconds S]\n"
    "       srbench --version\n"
    "\n"
    "  --model FILE      srdeploy ONNX model (--backend ort) or TensorRT engine (--backend trt)\n"
    "  --size WxH        low-resolution input width x height, e.g. 128x128\n"
    "  --batch N         images per inference (default 1)\n"
    "  --warmup N        untimed warm-up iterations (default 5)\n"
    "  --iters N         timed iterations (default 30)\n"
    "  --json FILE       write the srdeploy.bench/1 result here (atomically)\n"
    "  --threads N       ONNX Runtime intra-op threads (default: physical cores, ORT's own default)\n"
    "  --backend B       ort (ONNX Runtime, default) or trt (TensorRT, if compiled in)\n"
    "  --device D        cpu (default) or cuda[:N]\n"
    "  --meta FILE       TensorRT: srdeploy metadata as a JSON sidecar or the source .onnx\n"
    "                    (default: ENGINE.json, ENGINE-stem.json, ENGINE-stem.onnx)\n"
    "  --precision P     TensorRT: what the engine was built to compute in, when the sidecar lacks it\n"
    "  --quiet           print only the checksum line\n"
    "  --peak            measure this machine's FP32 FMA peak instead (FMA chains on vector\n"
    "                    registers, widest ISA the CPU has; --threads N, default physical cores;\n"
    "                    --seconds S, default 1.5); prints 'peak_gflops: V'\n"
    "\n"
    "Input is deterministic: x.flat[i] = ((i*37 + 11) % 256) / 255 over (N,C,H,W) float32\n"
    "(C = 1 for a GRAY model, else 3).\n"
    "Prints 'output_checksum: V' (sum of all outputs of one inference, accumulated in double).\n";

int parse_int(const std::string& flag, const std::string& v, int min_value) {
  try {
    std::size_t used = 0;
    const long long n = std::stoll(v, &used);
    if (used != v.size()) throw std::invalid_argument(v);
    if (n < min_value || n > 1000000000LL) throw std::out_of_range(v);
    return static_cast<int>(n);
  } catch (const std::exception&) {
    throw UsageError(flag + " expects an integer >= " + std::to_string(min_value) + ", got '" + v + "'");
  }
}

Options parse_args(int argc, char** argv, bool& show_version) {
  Options o;
  bool have_size = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    const auto eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto next = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) throw UsageError(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (arg == "--version") {
      show_version = true;
    } else if (arg == "--peak") {
      o.peak = true;
    } else if (arg == "--seconds") {
      const std::string v = next();
      try {
        o.peak_seconds = std::stod(v);
      } catch (const std::exception&) {
        throw UsageError("--seconds expects a number, got '" + v + "'");
      }
      if (!(o.peak_seconds > 0 && o.peak_seconds <= 600)) throw UsageError("--seconds must be in (0, 600]");
    } else if (arg == "--quiet") {
      o.quiet = true;
    } else if (arg == "--model") {
      o.model = next();
    } else if (arg == "--size") {
      const std::string v = next();
      const auto x = v.find_first_of("xX");
      if (x == std::string::npos) throw UsageError("--size expects WxH (e.g. 128x128), got '" + v + "'");
      o.width = parse_int("--size width", v.substr(0, x), 1);
      o.height = parse_int("--size height", v.substr(x + 1), 1);
      have_size = true;
    } else if (arg == "--batch") {
      o.batch = parse_int(arg, next(), 1);
    } else if (arg == "--warmup") {
      o.warmup = parse_int(arg, next(), 0);
    } else if (arg == "--iters") {
      o.iters = parse_int(arg, next(), 1);
    } else if (arg == "--threads") {
      o.threads = parse_int(arg, next(), 0);
    } else if (arg == "--json") {
      o.json_path = next();
    } else if (arg == "--meta") {
      o.meta_path = next();
    } else if (arg == "--precision") {
      o.precision = next();
      if (o.precision != "fp32" && o.precision != "fp16" && o.precision != "bf16") {
        throw UsageError("--precision must be fp32, fp16 or bf16, got '" + o.precision + "'");
      }
    } else if (arg == "--backend") {
      o.backend = next();
      if (o.backend == "onnxruntime") o.backend = "ort";
      if (o.backend == "tensorrt") o.backend = "trt";
      if (o.backend != "ort" && o.backend != "trt") {
        throw UsageError("--backend must be ort or trt, got '" + o.backend + "'");
      }
    } else if (arg == "--device") {
      o.device = next();
      if (o.device == "cuda") {
        o.device_id = 0;
      } else if (o.device.rfind("cuda:", 0) == 0) {
        o.device_id = parse_int("--device cuda:N", o.device.substr(5), 0);
      } else if (o.device != "cpu") {
        throw UsageError("--device must be cpu, cuda or cuda:N, got '" + o.device + "'");
      }
    } else {
      throw UsageError("unknown argument '" + std::string(argv[i]) + "'");
    }
  }
  if (show_version) return o;
  if (o.peak) {
    if (!o.model.empty() || have_size) throw UsageError("--peak measures the machine; drop --model and --size");
    return o;
  }
  if (o.model.empty()) throw UsageError("--model is required");
  if (!have_size) throw UsageError("--size WxH is required");
  return o;
}

void print_version() {
  std::cout << "srbench " << kVersion << "\n";
  std::cout << "onnxruntime " << onnxruntime_version() << " (compiled against C API version "
            << onnxruntime_header_api_version() << ")\n";
  std::cout << "onnxruntime providers:";
  for (const auto& p : onnxruntime_available_providers()) std::cout << " " << p;
  std::cout << "\n";
#ifdef SRBENCH_HAVE_TENSORRT
  std::cout << "tensorrt: enabled\n";
#else
  std::cout << "tensorrt: disabled (built without TensorRT)\n";
#endif
  std::cout << "compiler " << compiler_description() << "\n";
}

void check_model_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto st = fs::status(path, ec);
  if (!fs::exists(st)) throw UserError("model file not found: " + path);
  if (!fs::is_regular_file(st)) throw UserError("model path is not a file: " + path);
  if (fs::file_size(path, ec) == 0) throw UserError("model file is empty: " + path);
}

std::string fmt(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

int run(const Options& cli) {
  Options opt = cli;
  check_model_file(opt.model);
  if (opt.threads == 0) opt.threads = physical_cores();
  if (opt.backend == "ort" && !opt.meta_path.empty()) {
    throw UsageError("--meta is for TensorRT engines; an ONNX model carries its own metadata");
  }

  std::unique_ptr<Backend> be;
  if (opt.backend == "trt") {
#ifdef SRBENCH_HAVE_TENSORRT
    be = open_tensorrt(opt);
#else
    throw UserError("--backend trt: this srbench was built without TensorRT (CMake found no TensorRT "
                    "headers/libraries; rebuild with -DSRBENCH_WITH_TENSORRT=ON and TENSORRT_ROOT=...)");
#endif
  } else {
    be = open_onnxruntime(opt);
    if (!opt.precision.empty() && opt.precision != be->info.precision) {
      throw UserError("--precision " + opt.precision + ": ONNX Runtime computes in the model's own precision (" +
                      be->info.precision + " per its metadata); export a model in the precision you want");
    }
  }

  const std::int64_t n = opt.batch, c = be->info.channels, h = opt.height, w = opt.width, s = be->info.scale;
  const std::vector<std::int64_t> in_shape{n, c, h, w};
  const std::vector<std::int64_t> out_shape{n, c, h * s, w * s};
  const std::vector<float> input = deterministic_input(static_cast<std::size_t>(n * c * h * w));
  be->prepare(in_shape, input, out_shape);

  for (int i = 0; i < opt.warmup; ++i) be->run();
  std::vector<double> lat_ms;
  lat_ms.reserve(static_cast<std::size_t>(opt.iters));
  double checksum = 0.0;
  for (int i = 0; i < opt.iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    be->run();
    const auto t1 = std::chrono::steady_clock::now();
    lat_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    // Checksum of the first timed batch (schema), taken outside the timed region.
    if (i == 0) checksum = be->output_sum();
  }
  const Stats st = compute_stats(lat_ms);
  const double median_s = st.median / 1000.0;
  const double fps = median_s > 0 ? static_cast<double>(n) / median_s : 0.0;
  const double mpx = median_s > 0 ? static_cast<double>(n * h * s * w * s) / 1e6 / median_s : 0.0;

  if (!opt.json_path.empty()) {
    Json doc = Json::object();
    doc.set("schema", kSchema);
    doc.set("tool", "srbench");
    doc.set("timestamp", utc_timestamp());
    Json model = Json::object();
    model.set("path", opt.model);
    model.set("sha256", sha256_file(opt.model));
    model.set("scale", be->info.scale);
    if (!be->info.arch.empty()) model.set("arch", be->info.arch);
    if (opt.backend == "trt") model.set("metadata_from", be->info.source);
    doc.set("model", std::move(model));
    doc.set("backend", be->backend);
    doc.set("device", be->device);
    doc.set("precision", be->info.precision);
    doc.set("providers", Json::array_of(be->providers));
    if (opt.backend == "ort") doc.set("threads", be->threads);
    Json in = Json::object();
    in.set("batch", opt.batch);
    in.set("channels", be->info.channels);
    in.set("height", opt.height);
    in.set("width", opt.width);
    in.set("tile", 0);
    doc.set("input", std::move(in));
    doc.set("warmup", opt.warmup);
    doc.set("iters", opt.iters);
    Json lat = Json::object();
    lat.set("median", st.median);
    lat.set("p90", st.p90);
    lat.set("mean", st.mean);
    lat.set("min", st.min);
    lat.set("max", st.max);
    Json mo = Json::object();
    mo.set("latency_ms", std::move(lat));
    mo.set("fps", fps);
    mo.set("megapixels_per_s", mpx);
    mo.set("io", be->io);
    Json results = Json::object();
    results.set("model_only", std::move(mo));
    doc.set("results", std::move(results));
    doc.set("output_checksum", checksum);
    Json mach = Json::object();
    mach.set("hostname", hostname());
    mach.set("cpu", cpu_model());
    mach.set("cores", logical_cores());
    mach.set("os", os_description());
    mach.set("gpu", be->gpu.empty() ? Json() : Json(be->gpu));
    doc.set("machine", std::move(mach));
    Json ver = Json::object();
    ver.set("srbench", kVersion);
    for (const auto& kv : be->versions) ver.set(kv.first, kv.second);
    if (!ver.find("onnxruntime")) ver.set("onnxruntime", onnxruntime_version());
    ver.set("compiler", compiler_description());
    ver.set("cxx_standard", std::to_string(__cplusplus));
    doc.set("versions", std::move(ver));
    write_file_atomic(opt.json_path, doc.dump(2));
  }

  if (!opt.quiet) {
    std::cout << "srbench: " << be->backend << " " << be->device << " " << be->info.precision << ", model "
              << opt.model << " (scale " << s << "), input " << n << "x3x" << h << "x" << w << " -> " << n << "x3x"
              << h * s << "x" << w * s;
    if (opt.backend == "ort") std::cout << ", intra-op threads " << opt.threads;
    std::cout << "\nmodel_only: median " << fmt(st.median, 3) << " ms, p90 " << fmt(st.p90, 3) << " ms, mean "
              << fmt(st.mean, 3) << " ms (min " << fmt(st.min, 3) << ", max " << fmt(st.max, 3) << "), " << fmt(fps, 3)
              << " fps, " << fmt(mpx, 3) << " MP/s over " << opt.iters << " iterations after " << opt.warmup
              << " warm-up\n";
    if (!opt.json_path.empty()) std::cout << "wrote " << opt.json_path << "\n";
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", checksum);
  std::cout << "output_checksum: " << buf << std::endl;
  return 0;
}

}  // namespace
}  // namespace srbench

int main(int argc, char** argv) {
  using namespace srbench;
  try {
    bool show_version = false;
    const Options opt = parse_args(argc, argv, show_version);
    if (show_version) {
      print_version();
      return 0;
    }
    if (opt.peak) {
      const PeakResult r = measure_fma_peak(opt.threads > 0 ? opt.threads : physical_cores(), opt.peak_seconds);
      std::cout << "srbench: FP32 FMA peak, " << r.isa << ", " << r.threads << " thread(s), best of 3 rounds over "
                << r.seconds << " s (checksum " << r.checksum << ")\n";
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3f", r.gflops);
      std::cout << "peak_gflops: " << buf << " isa: " << r.isa << " threads: " << r.threads << std::endl;
      return 0;
    }
    return run(opt);
  } catch (const UsageError& e) {
    std::cerr << "srbench: error: " << e.what() << "\n(run srbench --help for usage)\n";
    return 2;
  } catch (const UserError& e) {
    std::cerr << "srbench: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "srbench: error: " << e.what() << "\n";
    return 1;
  }
}
