// The training configuration of dropk-train: defaults, the command line
// (a text-format file plus one flag per field), validation and printing.
//
// A TrainConfig is built in three layers, each overriding the one before:
// DefaultTrainConfig(), the file named by --config, then --field=value flags.
// Every field of dropk.TrainConfig (proto/config.proto) is a flag, found by
// reflection, so adding a field to the proto adds a flag.
#ifndef DROPK_TRAINER_CONFIG_H_
#define DROPK_TRAINER_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "config.pb.h"

namespace dropk {

// The defaults of every field: nanoGPT's where it has them, sized for a CPU
// (the char-level Tiny Shakespeare CPU recipe). Per-site dropout rates are
// left unset, so every site uses `dropout`.
TrainConfig DefaultTrainConfig();

// What the command line of dropk-train asks for: a config to run, or help.
struct TrainCommandLine {
  TrainConfig config;  // merged over the defaults, NOT validated; unused when help is set
  std::optional<std::string> help;  // --help/-h: print this to stdout and exit 0
  std::optional<std::string> version;  // --version: print this to stdout and exit 0
};

// Parses the command line of dropk-train (argv[0] is the program name):
//   --config FILE       text-format TrainConfig merged over the defaults
//   --<field>=VALUE     or --<field> VALUE, for every scalar field; overrides
//                       the file. Enums by name, case-insensitively; bools as
//                       true/false/1/0.
//   --help, -h          help listing every field, its type and default
//   --version           VersionLine("dropk-train") (base/version.h)
// Errors: InvalidArgument naming the flag and value for a value that does
// not parse or is out of the type's range, an unknown flag or a stray
// argument; InvalidArgument naming both files for a second --config (one
// would silently replace the other); InvalidArgument with file:line:column
// for a malformed config file; NotFound naming the path for a config file
// that cannot be read.
absl::StatusOr<TrainCommandLine> ParseTrainCommandLine(int argc, char** argv);

// ParseTrainCommandLine's config, for callers that show no help (tests,
// tools): --help is then InvalidArgument.
absl::StatusOr<TrainConfig> LoadTrainConfig(int argc, char** argv);

// Reads the text-format TrainConfig at `path` and merges it over `*config`
// (fields the file sets replace those in *config, others are kept).
// Errors: NotFound naming the path when it cannot be read or is not a
// regular file (a directory, a device); InvalidArgument
// "path:line:column: message" when it does not parse (unknown fields too),
// naming the field whose value is at fault and what that field takes
// ("field n_head: Expected integer, got: four (n_head takes an integer in
// [-2147483648, 2147483647])"), or that sets a singular field twice
// ("path:line:column: field n_layer is set twice (first on line 2)...");
// InvalidArgument naming the path and the limit for a file over 16 MiB.
absl::Status MergeTrainConfigFile(const std::string& path, TrainConfig* config);

// Sets the field named `name` of `*config` from its command-line spelling
// `value` (as --name=value would). Errors (InvalidArgument, message
// "--name=value: expected ..."): unknown field, unparseable or out-of-range
// value, or a field kind the command line cannot set (messages, repeated).
absl::Status SetTrainConfigField(const std::string& name, const std::string& value,
                                 TrainConfig* config);

// Checks every value on its own and against the others (no data needed).
// Returns OK, or InvalidArgument listing every problem, one line each,
// naming the field and its value: "n_embd=130 is not divisible by n_head=4",
// "dropout=1.5: must be in [0, 1)".
absl::Status ValidateTrainConfig(const TrainConfig& config);

// Checks the config against the token counts of the data in
// config.data_dir: every split must hold at least block_size + 1 tokens to
// give one (input, target) pair. Returns OK or InvalidArgument, one line,
// like "block_size=5000: must be smaller than the validation split of data/x
// (111540 tokens)" (naming both splits when both are short).
absl::Status ValidateAgainstData(const TrainConfig& config, uint64_t train_tokens,
                                 uint64_t val_tokens);

// Every field as text format, one "name: value" line each, including those
// at their zero value (proto3's printer would drop them) and excluding unset
// optional fields. Parses back to an equal message. For logs.
std::string ConfigToText(const TrainConfig& config);

// The dropout rate in effect at each kind of dropout site.
struct SiteDropout {
  float embedding;         // token + position embedding output
  float attention_probs;   // attention probabilities (after softmax)
  float attention_output;  // attention block output projection
  float mlp_output;        // MLP block output projection

  // Whether any site drops anything.
  bool Any() const {
    return embedding > 0 || attention_probs > 0 || attention_output > 0 || mlp_output > 0;
  }
};

// Each site's own rate when its field is set, else `config.dropout`.
SiteDropout EffectiveDropout(const TrainConfig& config);

// Whether the run's dropout masks are numbered by a 32-bit count of
// micro-batches since the start (PER_RANK streams with any dropout site on):
// then max_iters x gradient_accumulation_steps must fit that counter
// (ValidateTrainConfig), and DropoutPlanFor checks it does.
bool MasksCountMicroBatches(const TrainConfig& config);

}  // namespace dropk

#endif  // DROPK_TRAINER_CONFIG_H_
