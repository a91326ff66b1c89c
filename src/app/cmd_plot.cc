// `dsa plot`: a line chart (PNG, train/plot.h) from the columns of a CSV file — the benchmark
// CSVs (train-step and inference time against context, metrics) without a plotting stack.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "app/commands.h"
#include "app/reporting.h"
#include "base/error.h"
#include "train/plot.h"

namespace dsa::app {
namespace {

struct Table {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  size_t col(const std::string& name, const std::string& path) const {
    for (size_t i = 0; i < header.size(); ++i)
      if (header[i] == name) return i;
    std::string have;
    for (const auto& h : header) have += (have.empty() ? "" : ", ") + h;
    throw Error(fmt::format("{}: no column '{}' (columns: {})", path, name, have));
  }
};

std::vector<std::string> split_csv_line(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') cur += '"', ++i;
      else if (c == '"') quoted = false;
      else cur += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else if (c != '\r') {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

Table read_csv(const std::string& path) {
  std::ifstream f(path);
  DSA_CHECK(f.good(), "cannot read {}", path);
  Table t;
  std::string line;
  size_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    auto cells = split_csv_line(line);
    if (t.header.empty()) {
      t.header = std::move(cells);
      continue;
    }
    DSA_CHECK(cells.size() == t.header.size(), "{}:{}: {} fields, the header has {}", path, n, cells.size(),
              t.header.size());
    t.rows.push_back(std::move(cells));
  }
  DSA_CHECK(!t.header.empty(), "{}: empty file", path);
  return t;
}

double number(const std::string& s, const std::string& path, size_t row, const std::string& col) {
  size_t used = 0;
  double v = NAN;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  DSA_CHECK(used > 0 && used == s.size(), "{}: row {}, column '{}': '{}' is not a number", path, row + 1, col, s);
  return v;
}

}  // namespace

void add_plot_command(CLI::App& app) {
  struct Args {
    std::string csv, x, series, ratio, title, x_label, y_label, out;
    std::vector<std::string> y, where;
    bool log_x = false, log_y = false;
  };
  auto a = std::make_shared<Args>();
  auto* c = app.add_subcommand("plot", "Line chart (PNG) of CSV columns, e.g. a benchmark's time against context");
  c->add_option("csv", a->csv, "CSV file with a header row")->required();
  c->add_option("-x", a->x, "Column of the x values")->required();
  c->add_option("-y", a->y, "Column(s) of the y values (one series each, unless --series)")->required();
  c->add_option("--series", a->series, "Group rows into one series per value of this column (one -y column)");
  c->add_option("--where", a->where, "Keep rows with COL=VALUE (repeatable; all must hold)");
  c->add_option("--ratio", a->ratio, "With --series: plot series A over series B at each x instead (A/B)");
  c->add_flag("--log-x", a->log_x, "log10 x axis");
  c->add_flag("--log-y", a->log_y, "log10 y axis");
  c->add_option("--title", a->title, "Chart title (default: y against x)");
  c->add_option("--x-label", a->x_label, "x axis label (default: the column)");
  c->add_option("--y-label", a->y_label, "y axis label");
  c->add_option("-o,--out", a->out, "Output PNG")->required();
  c->callback([a] {
    reporting("plot", [&] {
      const Table t = read_csv(a->csv);
      DSA_CHECK(a->series.empty() || a->y.size() == 1, "--series takes exactly one -y column");
      DSA_CHECK(a->ratio.empty() || !a->series.empty(), "--ratio A/B needs --series");
      std::vector<std::pair<size_t, std::string>> filters;
      for (const std::string& w : a->where) {
        const size_t eq = w.find('=');
        DSA_CHECK(eq != std::string::npos && eq > 0, "--where {}: expected COL=VALUE", w);
        filters.emplace_back(t.col(w.substr(0, eq), a->csv), w.substr(eq + 1));
      }
      const size_t xc = t.col(a->x, a->csv), sc = a->series.empty() ? 0 : t.col(a->series, a->csv);
      // series name -> x -> (sum, count): repeated (series, x) rows are averaged.
      std::map<std::string, std::map<double, std::pair<double, int>>> pts;
      std::vector<std::string> order;
      for (const std::string& yname : a->y) {
        const size_t yc = t.col(yname, a->csv);
        for (size_t r = 0; r < t.rows.size(); ++r) {
          const auto& row = t.rows[r];
          bool keep = true;
          for (const auto& [fc, v] : filters) keep = keep && row[fc] == v;
          if (!keep || row[yc].empty()) continue;
          const std::string name = a->series.empty() ? yname : row[sc];
          if (!pts.count(name)) order.push_back(name);
          auto& p = pts[name][number(row[xc], a->csv, r, a->x)];
          p.first += number(row[yc], a->csv, r, yname);
          ++p.second;
        }
      }
      DSA_CHECK(!pts.empty(), "{}: no rows left to plot", a->csv);
      train::Chart ch;
      ch.title = a->title.empty() ? fmt::format("{} against {}", a->ratio.empty() ? a->y[0] : a->ratio, a->x) : a->title;
      ch.x_label = a->x_label.empty() ? a->x : a->x_label;
      ch.y_label = a->y_label;
      ch.log_x = a->log_x;
      ch.log_y = a->log_y;
      const std::vector<std::array<uint8_t, 3>> colors = {{31, 119, 180}, {214, 39, 40}, {44, 160, 44}, {255, 127, 14},
                                                          {148, 103, 189}, {140, 86, 75}, {127, 127, 127}};
      auto mean = [](const std::pair<double, int>& p) { return p.first / p.second; };
      if (!a->ratio.empty()) {
        const size_t slash = a->ratio.find('/');
        DSA_CHECK(slash != std::string::npos, "--ratio {}: expected A/B (two values of --series)", a->ratio);
        const std::string num = a->ratio.substr(0, slash), den = a->ratio.substr(slash + 1);
        DSA_CHECK(pts.count(num) && pts.count(den), "--ratio {}: the series are {}", a->ratio, fmt::join(order, ", "));
        train::Series s{a->ratio, {}, {}, colors[0]};
        for (const auto& [x, p] : pts[num]) {
          auto it = pts[den].find(x);
          if (it == pts[den].end()) continue;
          s.x.push_back(x);
          s.y.push_back(mean(p) / mean(it->second));
        }
        std::printf("%s: %zu points\n", a->ratio.c_str(), s.x.size());
        for (size_t i = 0; i < s.x.size(); ++i) std::printf("  %g %.4g\n", s.x[i], s.y[i]);
        ch.series.push_back(std::move(s));
      } else {
        for (const std::string& name : order) {
          train::Series s{name, {}, {}, colors[ch.series.size() % colors.size()]};
          for (const auto& [x, p] : pts[name]) s.x.push_back(x), s.y.push_back(mean(p));
          std::printf("%s: %zu points\n", name.c_str(), s.x.size());
          ch.series.push_back(std::move(s));
        }
      }
      train::write_png_chart(a->out, ch);
      std::printf("wrote %s\n", a->out.c_str());
    });
  });
}

}  // namespace dsa::app
