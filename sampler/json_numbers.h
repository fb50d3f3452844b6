// Numbers of a JSON body as the client wrote them. nlohmann's parser reads
// a number below double's range (1e-400) as 0 and refuses one past it
// (1e400) as a parse error naming no field, so a message built from the
// parsed body named a number the client never sent ("'top_p' must be a
// number in (0, 1], got 0"). Private to sampler/.
#ifndef DROPK_SAMPLER_JSON_NUMBERS_H_
#define DROPK_SAMPLER_JSON_NUMBERS_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dropk {

// A number of a JSON body that a double cannot hold.
struct UnreadableNumber {
  std::string field;  // the top-level field it sits in ("top_p"); "" outside any
  std::string text;   // as written ("1e-400"), cut to 40 characters and "..."
  bool overflow;      // past double's range (the parse failed), else below it (read as 0)
  // For a number below the range: why it cannot be read, quoting `text`
  // (UnderflowProblem of the whole number, so a nonzero digit past the cut
  // still counts).
  std::string underflow_problem;
};

// The numbers of `body` that a double cannot hold and that keep it from
// being read, in body order: the first one below double's range that is not
// zero (1e-400), when `counts(field)` says its top-level field matters, and
// one past the range (1e400: nlohmann refuses the whole body, so the parse
// ends there), whatever its field. So an overflow is never hidden by an
// underflow written before it. Empty when there is none, or when the body
// fails to parse for another reason. Reads the whole body again: call it
// only when the parsed body holds a float 0, or failed to parse.
std::vector<UnreadableNumber> FindUnreadableNumbers(std::string_view body,
                                                    bool (*counts)(const std::string& field));

// The first number in the top-level field `field` of `body` (JSON that
// parses) that nlohmann reads as the double `value`, as the client wrote it
// ("18446744073709551616", "1e3"), cut to 40 characters and "..."; nullopt
// when there is none. nlohmann keeps such a number as a double, and writes
// it back as the shortest text of the double (1.8446744073709552e+19,
// 1000.0). Reads the whole body again: for error messages only.
std::optional<std::string> FloatAsWritten(std::string_view body, const std::string& field,
                                          double value);

// Whether that same number (the first in `field` that nlohmann reads as
// `value`) is written as an integer, with no fraction or exponent: an
// integer past 64 bits (2^64, -2^63 - 1), which nlohmann keeps as a double,
// and not 1.0 or 1e3. False when there is none. Reads the whole body again:
// call it only for a double where an integer was wanted.
bool WrittenAsInteger(std::string_view body, const std::string& field, double value);

}  // namespace dropk

#endif  // DROPK_SAMPLER_JSON_NUMBERS_H_
