// A small line-chart PNG writer for the trainer's loss curves (and the lab's plots): series of
// (x, y) points drawn with axes, tick labels and a legend, encoded with zlib.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace dsa::train {

struct Series {
  std::string name;
  std::vector<double> x, y;
  std::array<uint8_t, 3> rgb{31, 119, 180};
};

struct Chart {
  std::string title, x_label, y_label;
  std::vector<Series> series;
  bool log_x = false, log_y = false;  // log10 axes (non-positive values are left out)
  int width = 900, height = 540;
};

// Writes the chart as an RGB PNG; throws dsa::Error when the file cannot be written.
void write_png_chart(const std::string& path, const Chart& chart);

}  // namespace dsa::train
