#include "tools/study/plot_run.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/path_status.h"
#include "tools/study/gnuplot.h"
#include "tools/study/run_metrics.h"

namespace dropk {
namespace {

namespace fs = std::filesystem;

std::string Cell(const std::optional<double>& v) {
  return v ? absl::StrFormat("%.9g", *v) : std::string("NaN");
}

absl::Status WriteCsv(const std::vector<RunMetricsRow>& rows, const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  out << "step,train_loss,eval_train_loss,val_loss,lr,tokens_per_s\n";
  for (const RunMetricsRow& r : rows) {
    out << r.step << "," << Cell(r.train_loss) << "," << Cell(r.eval_train_loss) << ","
        << Cell(r.val_loss) << "," << Cell(r.lr) << "," << Cell(r.tokens_per_s) << "\n";
  }
  if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

// The gnuplot preamble every run plot shares: a PNG of 900x500 reading the CSV.
std::string Preamble(const std::string& png, const std::string& title) {
  return absl::StrCat("set terminal pngcairo size 900,500 font 'Sans,10'\n", "set output ",
                      GnuplotQuote(png), "\n", "set datafile separator ','\n",
                      "set datafile missing 'NaN'\n", "set key top right\n", "set grid\n",
                      "set xlabel 'step'\n", "set title ", GnuplotQuote(title), "\n");
}

// The value of metrics.csv column `column` (2..6) in `row`.
std::optional<double> Column(const RunMetricsRow& row, int column) {
  switch (column) {
    case 2: return row.train_loss;
    case 3: return row.eval_train_loss;
    case 4: return row.val_loss;
    case 5: return row.lr;
    default: return row.tokens_per_s;
  }
}

// One line of a plot: a metrics.csv column and how to draw it.
struct Series {
  int column;
  std::string style;  // "with lines ... title '...'"
};

// The gnuplot `plot` command for the series of `series` that have a value
// in some row. gnuplot fails on a plot whose every series is empty ("x range
// is invalid": a log of a run whose losses were all null), so such a plot
// becomes an empty frame that says what is missing.
std::string PlotCommand(const std::vector<RunMetricsRow>& rows, const std::string& data,
                        const std::vector<Series>& series, const std::string& missing) {
  std::vector<std::string> parts;
  for (const Series& s : series) {
    const bool has_values = std::any_of(rows.begin(), rows.end(), [&](const RunMetricsRow& r) {
      return Column(r, s.column).has_value();
    });
    if (has_values) parts.push_back(absl::StrCat(data, " using 1:", s.column, " ", s.style));
  }
  if (parts.empty()) {
    return absl::StrCat("set label ", GnuplotQuote(absl::StrCat("no ", missing, " in the log")),
                        " at graph 0.5, 0.5 center\n", "set xrange [0:1]\nset yrange [0:1]\n",
                        "plot NaN notitle\n");
  }
  return absl::StrCat("plot ", absl::StrJoin(parts, ", \\\n  "), "\n");
}

}  // namespace

absl::StatusOr<std::vector<std::string>> PlotRun(const std::string& run_dir,
                                                 const std::string& out_dir) {
  absl::StatusOr<std::vector<RunMetricsRow>> rows =
      ReadRunMetrics((fs::path(run_dir) / "metrics.jsonl").string());
  if (!rows.ok()) return rows.status();
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) {
    return DirectoryCreationError(absl::StrCat("--out ", out_dir, ": cannot create it"), out_dir,
                                  ec);
  }
  const std::string csv = (fs::path(out_dir) / "metrics.csv").string();
  if (absl::Status s = WriteCsv(*rows, csv); !s.ok()) return s;

  const std::string title = fs::path(run_dir).lexically_normal().filename().string();
  const std::string data = GnuplotQuote(csv);
  struct Plot {
    std::string name, body;
  };
  // `every` is not needed: NaN cells drop out of each series, and the
  // evaluation series draw points joined by lines across the gaps.
  const std::vector<Plot> plots = {
      {"loss",
       absl::StrCat(
           "set ylabel 'loss (nats/token)'\n",
           PlotCommand(*rows, data,
                       {{2, "with lines lw 1 lc rgb '#9ecae1' title 'train (logged step)'"},
                        {3, "with linespoints pt 7 ps 0.6 lw 2 lc rgb '#3182bd' title 'train "
                            "(eval)'"},
                        {4, "with linespoints pt 7 ps 0.6 lw 2 lc rgb '#e6550d' title 'val "
                            "(eval)'"}},
                       "losses"))},
      {"lr", absl::StrCat("set ylabel 'learning rate'\n", "set format y '%.1e'\n",
                          PlotCommand(*rows, data,
                                      {{5, "with lines lw 2 lc rgb '#31a354' title 'lr'"}},
                                      "learning rates"))},
      {"tokens_per_s",
       absl::StrCat("set ylabel 'tokens/s (all ranks)'\n", "set yrange [0:*]\n",
                    PlotCommand(*rows, data,
                                {{6, "with lines lw 2 lc rgb '#756bb1' title 'tokens/s'"}},
                                "tokens/s figures"))},
  };
  std::vector<std::string> pngs;
  for (const Plot& plot : plots) {
    const std::string png = (fs::path(out_dir) / (plot.name + ".png")).string();
    const std::string script = (fs::path(out_dir) / (plot.name + ".gp")).string();
    if (absl::Status s =
            RunGnuplot(script, Preamble(png, absl::StrCat(title, ": ", plot.name)) + plot.body);
        !s.ok()) {
      // gnuplot opens its output before it plots: an empty loss.png left
      // behind would read as a plot of nothing.
      std::error_code ignored;
      fs::remove(png, ignored);
      return s;
    }
    pngs.push_back(png);
  }
  return pngs;
}

}  // namespace dropk
