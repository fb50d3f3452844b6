#include "trainer/config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/cli_flag_values.h"
#include "base/cut_for_message.h"
#include "base/number_text.h"
#include "base/version.h"
#include "comm/gradient_bucketer.h"
#include "config_text.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/text_format.h"
#include "model/utf8.h"
#include "trainer/comm_timeout.h"
#include "trainer/device.h"

namespace dropk {
namespace {

namespace pb = google::protobuf;

// The longest sample printed after training, in tokens.
constexpr int kMaxSampleTokens = 1'000'000;

// The most OpenMP/BLAS threads per rank.
constexpr int kMaxNumThreads = 1024;

// The most batches one evaluation runs. nanoGPT's recipes use 200 (500 for
// GPT-2 124M); 2^31 of them held the run at its first evaluation for days.
constexpr int kMaxEvalIters = 10'000;

// The most micro-batches per optimizer step. A step runs all of them before
// it ends (2^31 of them never ended); nanoGPT's GPT-2 recipe uses 40, and
// dropk launch raises it only to keep a global batch on fewer ranks.
constexpr int kMaxGradientAccumulationSteps = 1 << 16;

// The most micro-batches a run may train, max_iters x
// gradient_accumulation_steps: the PER_RANK dropout masks number them with
// a 32-bit counter (DropoutPlanFor), so past it masks would repeat.
constexpr int64_t kMaxMicroBatches = int64_t{1} << 32;

// One line of --help per field. A field missing here still gets its flag
// (flags come from the descriptor), only with a generic description.
struct FieldHelp {
  const char* name;
  const char* description;
};
constexpr FieldHelp kFieldHelp[] = {
    {"data_dir",
     "directory with tokenizer.pb and train.bin, val.bin (or shards train-00000.bin, ...)"},
    {"out_dir", "run directory: metrics.jsonl, checkpoints"},
    {"n_layer", "transformer blocks"},
    {"n_head", "attention heads per block"},
    {"n_embd", "embedding width; a multiple of n_head"},
    {"block_size", "context length in tokens"},
    {"batch_size", "sequences per micro-batch per process"},
    {"gradient_accumulation_steps", "micro-batches per optimizer step, at most 65536"},
    {"learning_rate", "peak learning rate (after warmup)"},
    {"min_lr", "learning rate at and after lr_decay_iters"},
    {"warmup_iters", "steps of linear warmup from 0"},
    {"lr_decay_iters", "step where cosine decay reaches min_lr"},
    {"max_iters", "optimizer steps to train"},
    {"weight_decay", "AdamW weight decay, matrices only"},
    {"beta1", "AdamW beta1"},
    {"beta2", "AdamW beta2"},
    {"grad_clip", "clip the global gradient norm to this; 0 disables"},
    {"dropout", "dropout rate of every site without its own rate"},
    {"dropout_embedding", "dropout after the embeddings (unset: dropout)"},
    {"dropout_attention_probs", "dropout on attention probabilities (unset: dropout)"},
    {"dropout_attention_output", "dropout on attention output (unset: dropout)"},
    {"dropout_mlp_output", "dropout on MLP output (unset: dropout)"},
    {"dropout_stream", "whose randomness masks use: per_rank or per_sample"},
    {"eval_interval", "evaluate train and val loss every this many steps"},
    {"eval_iters", "batches per evaluation, at most 10000"},
    {"log_interval", "log a progress line every this many steps"},
    {"profile",
     "time every kernel op (waiting for the device after each); rank 0 prints ms per step per "
     "op at the end; --profile alone means true"},
    {"seed", "seed of initialization, data order and dropout"},
    {"num_threads",
     "OpenMP/BLAS threads per rank, at most 1024; 0 = cores on this node / ranks on this node"},
    {"device", "cpu, or cuda (one GPU per rank, chosen by the rank on its node); unset = cpu"},
    {"precision",
     "matmul inputs: fp32, tf32 (cuda only) or bf16; weights, moments and sums stay fp32; "
     "unset = fp32"},
    {"attention_kernels",
     "cuda attention: flash_where_supported (tf32/bf16, head size 16, 32 or 64; no T x T "
     "probabilities in memory), materialised, or flash_bf16_tensor_cores (bf16 only; not yet "
     "run on a GPU); unset = flash_where_supported"},
    {"comm_backend",
     "auto (under mpirun: NCCL on CUDA with one GPU per rank, else MPI), single_process, mpi "
     "or nccl"},
    {"bucket_cap_mb", "gradient allreduce bucket cap, MiB"},
    {"overlap_comm", "overlap gradient allreduce with backward"},
    {"consistency_check_every", "compare parameter digests across ranks every N steps; 0 disables"},
    {"comm_timeout_s",
     "seconds before a stuck collective fails the job, at most 2592000 (30 days); 0 = auto (20 "
     "x the slowest step, at least 30 s; 300 s until a step is measured)"},
    {"sample_tokens", "tokens sampled after training, at most 1000000; 0 disables"},
    {"sample_top_k", "top-k of that sample; 0 = no limit"},
    {"sample_temperature", "temperature of that sample"},
    {"sample_prompt", "prompt of that sample"},
    {"checkpoint_dir", "checkpoint directory; empty = out_dir/checkpoints"},
    {"save_every",
     "save a checkpoint every this many steps; 0 = only at the end and on a stop signal "
     "(SIGTERM, SIGINT, SIGUSR1, SIGHUP)"},
    {"keep_last",
     "keep the newest this many checkpoints, and always the newest known good (whose parameters "
     "gave a finite loss)"},
    {"keep_every", "also keep checkpoints at multiples of this step; 0 = none"},
    {"async_checkpoints",
     "write checkpoints on a background thread; training pauses only to copy the state "
     "(needs host memory for a second copy of it)"},
    {"resume",
     "empty = fresh start; latest = newest valid checkpoint (none yet: step 0); or a "
     "checkpoint, a checkpoints directory or a run directory"},
    {"allow_data_change",
     "resume even when data_dir holds other data than the checkpoint was trained on (same "
     "tokenizer); the data order then does not match the original run's"},
    {"init_from",
     "start from the weights of this safetensors file (Hugging Face GPT-2's layout: GPT-2's "
     "model.safetensors or a dropk export) instead of random ones; a checkpoint to resume "
     "from takes precedence; empty = random"},
};

// The description of a field missing from kFieldHelp (a test keeps it unused).
constexpr char kNoFieldHelp[] = "a field of dropk.TrainConfig";

std::string DescriptionOf(const std::string& name) {
  for (const FieldHelp& help : kFieldHelp) {
    if (name == help.name) return help.description;
  }
  return kNoFieldHelp;
}

// Fields the command line can set: singular scalars, strings and enums.
bool IsFlagField(const pb::FieldDescriptor* field) {
  return !field->is_repeated() && field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE;
}

std::string TypeName(const pb::FieldDescriptor* field) {
  if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM) {
    return EnumNames(field->enum_type(), "|");
  }
  return field->type_name();
}

// The value of `field` in `config` as text format writes it.
std::string FieldValueText(const TrainConfig& config, const pb::FieldDescriptor* field) {
  std::string text;
  pb::TextFormat::PrintFieldValueToString(config, field, -1, &text);
  return text;
}

template <typename Int>
absl::Status ParseInteger(const std::string& flag, const std::string& value, Int* out) {
  if (absl::SimpleAtoi(value, out)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(flag, ": expected an integer in [",
                                                 std::numeric_limits<Int>::min(), ", ",
                                                 std::numeric_limits<Int>::max(), "]"));
}

template <typename Real>
absl::Status ParseReal(const std::string& flag, const std::string& value, Real* out) {
  switch (ReadRealText(value, out)) {
    case RealText::kFinite: return absl::OkStatus();
    // SimpleAtof turns an overflow into inf; a config never wants inf or nan.
    case RealText::kNotANumber:
    case RealText::kNotFinite:
      return absl::InvalidArgumentError(absl::StrCat(
          flag, ": expected a finite number (", std::is_same_v<Real, float> ? "float" : "double",
          ", magnitude at most ", std::numeric_limits<Real>::max(), ")"));
    // ... and an underflow into 0, which validation then reported as
    // "learning_rate=0: must be > 0" for --learning_rate=1e-50.
    case RealText::kUnderflow: break;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      flag, ": ", UnderflowProblem(std::string(absl::StripAsciiWhitespace(value)), *out)));
}

std::string HelpText() {
  const TrainConfig defaults = DefaultTrainConfig();
  const pb::Descriptor* descriptor = TrainConfig::descriptor();
  struct Row {
    std::string flag, type, default_text, description;
  };
  std::vector<Row> rows;
  rows.push_back(
      {"--config", "FILE", "none", "text-format dropk.TrainConfig merged over the defaults"});
  rows.push_back({"--help, -h", "", "", "print this help and exit"});
  rows.push_back({"--version", "", "", "print the version and exit"});
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const pb::FieldDescriptor* field = descriptor->field(i);
    if (!IsFlagField(field)) continue;
    // An enum's zero value (DEVICE_UNSPECIFIED, ...) is not a choice one
    // can type: "unset".
    const std::string default_text =
        field->has_presence() && !defaults.GetReflection()->HasField(defaults, field)
            ? "unset"
            : FieldValueAsFlagged(defaults, field);
    rows.push_back({absl::StrCat("--", field->name()), TypeName(field), default_text,
                    DescriptionOf(field->name())});
  }
  // One enum's names (attention_kernels': 58 characters) set the type
  // column's width for every row, and pushed each description past column
  // 118. A type wider than this ends its row's line; the row goes on below.
  constexpr size_t kMaxTypeWidth = 28;  // auto|single_process|mpi|nccl
  size_t flag_width = 0, type_width = 0, default_width = 0;
  for (const Row& row : rows) {
    flag_width = std::max(flag_width, row.flag.size());
    if (row.type.size() <= kMaxTypeWidth) type_width = std::max(type_width, row.type.size());
    default_width = std::max(default_width, row.default_text.size());
  }
  auto pad = [](const std::string& s, size_t width) {
    return s + std::string(width - s.size() + 2, ' ');
  };
  std::string text =
      "Usage: dropk-train [--config FILE] [--FIELD=VALUE | --FIELD VALUE]...\n"
      "\n"
      "Trains a GPT. The config is the defaults below, then the --config "
      "file,\nthen the flags, each overriding the one before.\n"
      "\n";
  absl::StrAppend(&text, "  ", pad("flag", flag_width), pad("type", type_width),
                  pad("default", default_width), "description\n");
  for (const Row& row : rows) {
    if (row.type.size() > type_width) {
      absl::StrAppend(&text, "  ", pad(row.flag, flag_width), row.type, "\n  ", pad("", flag_width),
                      pad("", type_width), pad(row.default_text, default_width), row.description,
                      "\n");
      continue;
    }
    absl::StrAppend(&text, "  ", pad(row.flag, flag_width), pad(row.type, type_width),
                    pad(row.default_text, default_width), row.description, "\n");
  }
  return text;
}

// Appends problems found by the checks below, one line each.
class Problems {
 public:
  void Add(std::string line) { lines_.push_back(std::move(line)); }

  // Integer `name=value` must be >= min.
  void AtLeast(const char* name, int64_t value, int64_t min) {
    if (value < min) Add(absl::StrCat(name, "=", value, ": must be >= ", min));
  }

  // Real `name=value` must be finite and > min (or >= min when inclusive).
  void Above(const char* name, float value, float min, bool inclusive) {
    if (!std::isfinite(value)) {
      Add(absl::StrCat(name, "=", value, ": must be a finite number"));
    } else if (inclusive ? !(value >= min) : !(value > min)) {
      Add(absl::StrCat(name, "=", value, ": must be ", inclusive ? ">= " : "> ", min));
    }
  }

  // Real `name=value` must be in [0, 1).
  void UnitInterval(const char* name, float value) {
    if (!(value >= 0.0f && value < 1.0f)) {
      Add(absl::StrCat(name, "=", value, ": must be in [0, 1)"));
    }
  }

  // String `name` must not be empty.
  void NonEmpty(const char* name, const std::string& value) {
    if (value.empty()) Add(absl::StrCat(name, "=\"\": must not be empty"));
  }

  absl::Status ToStatus() const {
    if (lines_.empty()) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrJoin(lines_, "\n"));
  }

 private:
  std::vector<std::string> lines_;
};

}  // namespace

TrainConfig DefaultTrainConfig() {
  TrainConfig config;
  config.set_data_dir("data/shakespeare_char");
  config.set_out_dir("out");
  config.set_n_layer(4);
  config.set_n_head(4);
  config.set_n_embd(128);
  config.set_block_size(64);
  config.set_batch_size(12);
  config.set_gradient_accumulation_steps(1);
  config.set_learning_rate(1e-3f);
  config.set_min_lr(1e-4f);
  config.set_warmup_iters(100);
  config.set_lr_decay_iters(2000);
  config.set_max_iters(2000);
  config.set_weight_decay(0.1f);
  config.set_beta1(0.9f);
  config.set_beta2(0.99f);
  config.set_grad_clip(1.0f);
  config.set_dropout(0.0f);
  config.set_dropout_stream(TrainConfig::PER_RANK);
  config.set_eval_interval(250);
  config.set_eval_iters(20);
  config.set_log_interval(10);
  config.set_seed(1337);
  config.set_num_threads(0);
  config.set_comm_backend(TrainConfig::AUTO);
  config.set_bucket_cap_mb(static_cast<float>(kDefaultBucketCapBytes) / (1 << 20));
  config.set_overlap_comm(true);
  config.set_consistency_check_every(100);
  config.set_comm_timeout_s(0.0f);  // auto: see CommTimeout()
  config.set_sample_tokens(300);
  config.set_sample_top_k(10);
  config.set_sample_temperature(1.0f);
  config.set_sample_prompt("\n");
  config.set_checkpoint_dir("");
  config.set_save_every(0);
  config.set_keep_last(3);
  config.set_keep_every(0);
  config.set_async_checkpoints(true);
  config.set_resume("");
  return config;
}

absl::Status SetTrainConfigField(const std::string& name, const std::string& value,
                                 TrainConfig* config) {
  const std::string flag = absl::StrCat("--", name, "=", value);
  const pb::FieldDescriptor* field = TrainConfig::descriptor()->FindFieldByName(name);
  if (field == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": unknown field of dropk.TrainConfig"));
  }
  if (!IsFlagField(field)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": this field cannot be set from the command line"));
  }
  const pb::Reflection* reflection = config->GetReflection();
  switch (field->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      int32_t v;
      if (absl::Status s = ParseInteger(flag, value, &v); !s.ok()) return s;
      reflection->SetInt32(config, field, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      int64_t v;
      if (absl::Status s = ParseInteger(flag, value, &v); !s.ok()) return s;
      reflection->SetInt64(config, field, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32: {
      uint32_t v;
      if (absl::Status s = ParseInteger(flag, value, &v); !s.ok()) return s;
      reflection->SetUInt32(config, field, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      uint64_t v;
      if (absl::Status s = ParseInteger(flag, value, &v); !s.ok()) return s;
      reflection->SetUInt64(config, field, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_FLOAT: {
      float v;
      if (absl::Status s = ParseReal(flag, value, &v); !s.ok()) return s;
      if (std::string why = RoundedAcrossBound(name, value, v); !why.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(flag, ": ", why));
      }
      reflection->SetFloat(config, field, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_DOUBLE: {
      double v;
      if (absl::Status s = ParseReal(flag, value, &v); !s.ok()) return s;
      reflection->SetDouble(config, field, v);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      const std::string lower = absl::AsciiStrToLower(value);
      if (lower == "true" || lower == "1" || lower.empty()) {  // empty: --flag alone
        reflection->SetBool(config, field, true);
      } else if (lower == "false" || lower == "0") {
        reflection->SetBool(config, field, false);
      } else {
        return absl::InvalidArgumentError(absl::StrCat(flag, ": expected true, false, 1 or 0"));
      }
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_STRING: reflection->SetString(config, field, value); break;
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const pb::EnumDescriptor* type = field->enum_type();
      const std::string upper = absl::AsciiStrToUpper(value);
      const pb::EnumValueDescriptor* found = type->FindValueByName(upper);
      if (found == nullptr || found->number() == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(flag, ": expected one of ", EnumNames(type, ", ")));
      }
      reflection->SetEnum(config, field, found);
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE: break;  // Excluded by IsFlagField.
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainCommandLine> ParseTrainCommandLine(int argc, char** argv) {
  const pb::Descriptor* descriptor = TrainConfig::descriptor();
  CLI::App app("dropk-train");
  // Unknown arguments are collected and reported below with a clearer
  // message than CLI11's.
  app.allow_extras(true);
  app.set_version_flag("--version", VersionLine("dropk-train"));
  std::string config_path;
  // A second --config is refused below (count() counts every occurrence);
  // TakeLast only keeps CLI11 from failing first with a vaguer message.
  CLI::Option* config_option = app.add_option("--config", config_path)
                                   ->type_name("FILE")
                                   ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  // One string option per field, parsed by field type after the file is
  // merged; sized up front because CLI11 keeps references into it.
  std::vector<std::string> values(descriptor->field_count());
  std::vector<CLI::Option*> options(descriptor->field_count(), nullptr);
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const pb::FieldDescriptor* field = descriptor->field(i);
    if (!IsFlagField(field)) continue;
    options[i] =
        app.add_option(absl::StrCat("--", field->name()), values[i], DescriptionOf(field->name()))
            ->type_name(TypeName(field))
            ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    // A bool flag alone (--profile) means true; --profile=false still works.
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_BOOL) {
      options[i]->expected(0, 1);
    }
  }
  // CLI11 reads `--name=` (an empty value) as `--name` and then takes the
  // next argument as its value: `--resume= --out_dir=x` set resume to
  // "--out_dir=x" and lost out_dir. An empty value goes as its own argument.
  std::vector<std::string> args;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i > 0 && arg.size() > 3 && arg.starts_with("--") && arg.back() == '=' &&
        arg.find('=') == arg.size() - 1) {
      args.push_back(arg.substr(0, arg.size() - 1));
      args.emplace_back();
    } else {
      args.push_back(arg);
    }
  }
  // `--resume --max_iters=5` resumed from a checkpoint named "--max_iters=5".
  if (const std::string missing = FlagMissingItsValue(
          app,
          std::vector<std::string>(args.begin() + std::min<size_t>(1, args.size()), args.end()));
      !missing.empty()) {
    return absl::InvalidArgumentError(missing);
  }
  std::vector<char*> arg_pointers;
  for (std::string& arg : args) arg_pointers.push_back(arg.data());
  try {
    app.parse(static_cast<int>(arg_pointers.size()), arg_pointers.data());
  } catch (const CLI::CallForHelp&) {
    return TrainCommandLine{DefaultTrainConfig(), HelpText(), std::nullopt};
  } catch (const CLI::CallForVersion& e) {
    return TrainCommandLine{DefaultTrainConfig(), std::nullopt, absl::StrCat(e.what(), "\n")};
  } catch (const CLI::ParseError& e) {
    return absl::InvalidArgumentError(e.what());
  }
  const std::vector<std::string> extras = app.remaining();
  if (!extras.empty()) {
    for (const std::string& extra : extras) {
      if (extra.size() > 1 && extra[0] == '-') {
        std::vector<std::string> known = {"--config", "--help"};
        for (const CLI::Option* option : options) {
          if (option != nullptr) known.push_back(option->get_name());
        }
        const std::string name = extra.substr(0, extra.find('='));
        return absl::InvalidArgumentError(absl::StrCat("unknown flag ", name, DidYouMean(name, known),
                                                       ": not --config nor a field of "
                                                       "dropk.TrainConfig (see --help)"));
      }
    }
    return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", extras.front(),
                                                   "': every setting is a --flag (see --help)"));
  }

  if (config_option->count() > 1) {
    const std::vector<std::string>& paths = config_option->results();
    return absl::InvalidArgumentError(absl::StrCat(
        "--config given ", paths.size(), " times (", absl::StrJoin(paths, ", "),
        "): dropk-train reads one config file; merge them, or set fields with --FIELD flags"));
  }
  TrainConfig config = DefaultTrainConfig();
  if (config_option->count() > 0) {
    // `--config=` (a variable that was never set) said "config file : cannot
    // open", naming nothing.
    if (config_path.empty()) {
      return absl::InvalidArgumentError(
          "--config=\"\": names no file; --config must name a text-format dropk.TrainConfig "
          "file");
    }
    if (absl::Status s = MergeTrainConfigFile(config_path, &config); !s.ok()) {
      return s;
    }
  }
  for (int i = 0; i < descriptor->field_count(); ++i) {
    if (options[i] == nullptr || options[i]->count() == 0) continue;
    if (absl::Status s = SetTrainConfigField(descriptor->field(i)->name(), values[i], &config);
        !s.ok()) {
      return s;
    }
  }
  return TrainCommandLine{std::move(config), std::nullopt, std::nullopt};
}

absl::StatusOr<TrainConfig> LoadTrainConfig(int argc, char** argv) {
  absl::StatusOr<TrainCommandLine> command_line = ParseTrainCommandLine(argc, argv);
  if (!command_line.ok()) return command_line.status();
  if (command_line->help) return absl::InvalidArgumentError("--help: no help shown here");
  if (command_line->version) return absl::InvalidArgumentError("--version: no version shown here");
  return std::move(command_line->config);
}

absl::Status ValidateTrainConfig(const TrainConfig& c) {
  Problems p;
  p.AtLeast("n_layer", c.n_layer(), 1);
  p.AtLeast("n_head", c.n_head(), 1);
  p.AtLeast("n_embd", c.n_embd(), 1);
  if (c.n_head() >= 1 && c.n_embd() >= 1 && c.n_embd() % c.n_head() != 0) {
    p.Add(absl::StrCat("n_embd=", c.n_embd(), " is not divisible by n_head=", c.n_head()));
  }
  p.AtLeast("block_size", c.block_size(), 1);
  p.AtLeast("batch_size", c.batch_size(), 1);
  p.AtLeast("gradient_accumulation_steps", c.gradient_accumulation_steps(), 1);
  if (c.gradient_accumulation_steps() > kMaxGradientAccumulationSteps) {
    p.Add(absl::StrCat("gradient_accumulation_steps=", c.gradient_accumulation_steps(),
                       ": must be at most ", kMaxGradientAccumulationSteps,
                       " (micro-batches per optimizer step, all run before the step ends; "
                       "nanoGPT's GPT-2 recipe uses 40)"));
  }

  p.Above("learning_rate", c.learning_rate(), 0.0f, /*inclusive=*/false);
  if (!std::isfinite(c.min_lr()) || !(c.min_lr() >= 0.0f) ||
      (std::isfinite(c.learning_rate()) && c.min_lr() > c.learning_rate())) {
    p.Add(absl::StrCat("min_lr=", c.min_lr(), ": must be in [0, learning_rate=", c.learning_rate(),
                       "]"));
  }
  p.AtLeast("warmup_iters", c.warmup_iters(), 0);
  p.AtLeast("lr_decay_iters", c.lr_decay_iters(), 0);
  p.AtLeast("max_iters", c.max_iters(), 0);
  if (const int64_t micro_batches =
          static_cast<int64_t>(c.max_iters()) * c.gradient_accumulation_steps();
      micro_batches > kMaxMicroBatches && MasksCountMicroBatches(c)) {
    p.Add(absl::StrCat("max_iters=", c.max_iters(),
                       " x gradient_accumulation_steps=", c.gradient_accumulation_steps(), " = ",
                       micro_batches, " micro-batches: must be at most ", kMaxMicroBatches,
                       " with dropout on and dropout_stream: per_rank (its masks number "
                       "micro-batches with a 32-bit counter; past it they would repeat); "
                       "lower max_iters or use dropout_stream: per_sample"));
  }
  // The cosine phase divides by lr_decay_iters - warmup_iters; it is reached
  // only when training runs past warmup.
  if (c.max_iters() > c.warmup_iters() && c.lr_decay_iters() <= c.warmup_iters()) {
    p.Add(absl::StrCat("lr_decay_iters=", c.lr_decay_iters(), ": must be > warmup_iters=",
                       c.warmup_iters(), " when max_iters=", c.max_iters(), " goes past warmup"));
  }
  p.Above("weight_decay", c.weight_decay(), 0.0f, /*inclusive=*/true);
  p.UnitInterval("beta1", c.beta1());
  p.UnitInterval("beta2", c.beta2());
  p.Above("grad_clip", c.grad_clip(), 0.0f, /*inclusive=*/true);

  p.UnitInterval("dropout", c.dropout());
  if (c.has_dropout_embedding()) {
    p.UnitInterval("dropout_embedding", c.dropout_embedding());
  }
  if (c.has_dropout_attention_probs()) {
    p.UnitInterval("dropout_attention_probs", c.dropout_attention_probs());
  }
  if (c.has_dropout_attention_output()) {
    p.UnitInterval("dropout_attention_output", c.dropout_attention_output());
  }
  if (c.has_dropout_mlp_output()) {
    p.UnitInterval("dropout_mlp_output", c.dropout_mlp_output());
  }
  if (c.dropout_stream() == TrainConfig::DROPOUT_STREAM_UNSPECIFIED) {
    p.Add(absl::StrCat("dropout_stream=DROPOUT_STREAM_UNSPECIFIED: must be one of ",
                       EnumNames(TrainConfig::DropoutStream_descriptor(), ", ")));
  }
  // proto3 enums are open: a config file's `device: 9` parses, and code that
  // checks for CUDA ran it on the CPU. Only the values the schema names.
  const pb::Descriptor* descriptor = TrainConfig::descriptor();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const pb::FieldDescriptor* field = descriptor->field(i);
    if (field->cpp_type() != pb::FieldDescriptor::CPPTYPE_ENUM || field->is_repeated()) continue;
    const int value = c.GetReflection()->GetEnumValue(c, field);
    if (field->enum_type()->FindValueByNumber(value) == nullptr) {
      p.Add(absl::StrCat(field->name(), "=", value, ": not a value of ",
                         field->enum_type()->full_name(), "; must be one of ",
                         EnumNames(field->enum_type(), ", ")));
    }
  }

  p.AtLeast("eval_interval", c.eval_interval(), 1);
  p.AtLeast("eval_iters", c.eval_iters(), 1);
  if (c.eval_iters() > kMaxEvalIters) {
    p.Add(absl::StrCat("eval_iters=", c.eval_iters(), ": must be at most ", kMaxEvalIters,
                       " (batches per evaluation; nanoGPT's recipes use 200)"));
  }
  p.AtLeast("log_interval", c.log_interval(), 1);
  // More threads than any node has cores only oversubscribes, and under a
  // container's pids limit 200 of them crashed inside libgomp with a line
  // that named no field. The bound is `dropk data prepare --threads`'s.
  if (c.num_threads() < 0 || c.num_threads() > kMaxNumThreads) {
    p.Add(absl::StrCat("num_threads=", c.num_threads(), ": must be in [0, ", kMaxNumThreads,
                       "] (0 = cores on this node / ranks on this node)"));
  }
  if (c.comm_backend() == TrainConfig::COMM_BACKEND_UNSPECIFIED) {
    p.Add(absl::StrCat("comm_backend=COMM_BACKEND_UNSPECIFIED: must be one of ",
                       EnumNames(TrainConfig::CommBackend_descriptor(), ", ")));
  }
  if (c.comm_backend() == TrainConfig::NCCL && c.device() != TrainConfig::CUDA) {
    p.Add(
        "comm_backend=NCCL: needs device: CUDA (NCCL reduces GPU buffers); use MPI or AUTO on "
        "the CPU");
  }
  p.Above("bucket_cap_mb", c.bucket_cap_mb(), 0.0f, /*inclusive=*/false);
  // The cap becomes a size_t byte count; 1e38 MiB does not fit one (an
  // undefined conversion). No model needs buckets past 1 TiB.
  if (c.bucket_cap_mb() > kMaxBucketCapMb) {
    p.Add(absl::StrCat("bucket_cap_mb=", c.bucket_cap_mb(), ": must be at most ",
                       static_cast<int64_t>(kMaxBucketCapMb), " (1 TiB)"));
  }
  p.AtLeast("consistency_check_every", c.consistency_check_every(), 0);
  p.Above("comm_timeout_s", c.comm_timeout_s(), 0.0f, /*inclusive=*/true);
  if (c.comm_timeout_s() > kCommTimeoutMaxS) {
    p.Add(absl::StrCat("comm_timeout_s=", c.comm_timeout_s(), ": must be at most ",
                       static_cast<int64_t>(kCommTimeoutMaxS), " (30 days); 0 = auto"));
  }
  p.AtLeast("sample_tokens", c.sample_tokens(), 0);
  // Each token is a forward pass over the context, and every one is kept:
  // 2^31 tokens ran for days and wanted 16 GiB no memory check counted.
  if (c.sample_tokens() > kMaxSampleTokens) {
    p.Add(absl::StrCat("sample_tokens=", c.sample_tokens(), ": must be at most ", kMaxSampleTokens,
                       " (the sample printed after training; dropk sample "
                       "generates more)"));
  }
  p.AtLeast("sample_top_k", c.sample_top_k(), 0);
  p.Above("sample_temperature", c.sample_temperature(), 0.0f,
          /*inclusive=*/false);
  p.NonEmpty("data_dir", c.data_dir());
  p.NonEmpty("out_dir", c.out_dir());
  // A path ends at its first NUL for the system: data_dir "d\0x" (text
  // format's "\000") read d while the checkpoint's config said otherwise,
  // and out_dir "a\0b" made a directory "a"; init_from "w.safetensors\0x"
  // read w.safetensors, and its errors carried the raw NUL.
  for (const auto& [name, path] :
       {std::pair<const char*, const std::string&>{"data_dir", c.data_dir()},
        {"out_dir", c.out_dir()},
        {"checkpoint_dir", c.checkpoint_dir()},
        {"resume", c.resume()},
        {"init_from", c.init_from()}}) {
    if (path.find('\0') != std::string::npos) {
      p.Add(absl::StrCat(name, "=\"", absl::CEscape(path),
                         "\": holds a NUL byte, which no path can hold"));
    } else if (HoldsControlCharacter(path)) {
      // A carriage return from a script saved with Windows line endings
      // (`--out_dir=run1\r`) made a directory "run1\r"; a newline split
      // every error line that named the path, and the failure record,
      // read line by line, with it; an ESC reached the terminal.
      p.Add(absl::StrCat(name, "=\"", EscapeForMessage(path),
                         "\": holds a control character (shown as \\uXXXX), which a run's "
                         "paths may not hold",
                         absl::StrContains(path, '\r')
                             ? "; a script or config saved with Windows line endings?"
                             : ""));
    }
  }
  // Every checkpoint's manifest holds the config as protobuf, which refuses
  // to read back a `string` that is not UTF-8: a run with out_dir
  // "runs/\xff" trained and wrote checkpoints that no resume, serve or
  // `dropk ckpt` could open ("manifest body does not parse").
  // (TrainConfig holds no nested messages; a repeated string field is
  // checked value by value.)
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const pb::FieldDescriptor* field = descriptor->field(i);
    if (field->type() != pb::FieldDescriptor::TYPE_STRING) continue;
    const pb::Reflection* reflection = c.GetReflection();
    const int values = field->is_repeated() ? reflection->FieldSize(c, field) : 1;
    for (int k = 0; k < values; ++k) {
      const std::string value = field->is_repeated() ? reflection->GetRepeatedString(c, field, k)
                                                     : reflection->GetString(c, field);
      if (const std::optional<size_t> at = FirstNonUtf8Byte(value)) {
        p.Add(absl::StrCat(field->name(), "=\"", absl::CHexEscape(value), "\": byte ", *at + 1,
                           " is not UTF-8; the config is saved in every checkpoint, which could "
                           "not be read back with it"));
      }
    }
  }
  p.AtLeast("save_every", c.save_every(), 0);
  p.AtLeast("keep_last", c.keep_last(), 1);
  p.AtLeast("keep_every", c.keep_every(), 0);
  for (const std::string& problem : DeviceProblems(c)) p.Add(problem);
  return p.ToStatus();
}

absl::Status ValidateAgainstData(const TrainConfig& config, uint64_t train_tokens,
                                 uint64_t val_tokens) {
  // One (input, target) pair needs block_size + 1 consecutive tokens.
  const auto too_short = [&](uint64_t tokens) {
    return config.block_size() < 0 || static_cast<uint64_t>(config.block_size()) >= tokens;
  };
  const std::string block_size = absl::StrCat("block_size=", config.block_size(), ": ");
  // Both splits short is one line: the second read as a line of its own,
  // without the binary's name.
  if (too_short(train_tokens) && too_short(val_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat(
        block_size, "must be smaller than the training split of ", config.data_dir(), " (",
        train_tokens, " tokens) and its validation split (", val_tokens, " tokens)"));
  }
  if (too_short(train_tokens) || too_short(val_tokens)) {
    const bool train = too_short(train_tokens);
    return absl::InvalidArgumentError(
        absl::StrCat(block_size, "must be smaller than the ", train ? "training" : "validation",
                     " split of ", config.data_dir(), " (", train ? train_tokens : val_tokens,
                     " tokens)"));
  }
  return absl::OkStatus();
}

std::string ConfigToText(const TrainConfig& config) {
  const pb::Descriptor* descriptor = config.GetDescriptor();
  const pb::Reflection* reflection = config.GetReflection();
  std::string text;
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const pb::FieldDescriptor* field = descriptor->field(i);
    if (field->is_repeated() || field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      continue;
    }
    if (field->has_presence() && !reflection->HasField(config, field)) continue;
    absl::StrAppend(&text, field->name(), ": ", FieldValueText(config, field), "\n");
  }
  return text;
}

bool MasksCountMicroBatches(const TrainConfig& config) {
  if (config.dropout_stream() == TrainConfig::PER_SAMPLE) return false;
  return EffectiveDropout(config).Any();
}

SiteDropout EffectiveDropout(const TrainConfig& config) {
  const float p = config.dropout();
  return SiteDropout{
      config.has_dropout_embedding() ? config.dropout_embedding() : p,
      config.has_dropout_attention_probs() ? config.dropout_attention_probs() : p,
      config.has_dropout_attention_output() ? config.dropout_attention_output() : p,
      config.has_dropout_mlp_output() ? config.dropout_mlp_output() : p,
  };
}

}  // namespace dropk
