// Line-chart PNG: an RGB raster, Bresenham lines, a 5x7 bitmap font for labels, zlib-compressed
// IDAT (train/plot.h).
#include "train/plot.h"

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fmt/format.h>
#include <fstream>
#include <map>

#include "base/error.h"

namespace dsa::train {

namespace {

// 5x7 glyphs, one byte per row (low 5 bits, MSB = left column).
const std::map<char, std::array<uint8_t, 7>>& font() {
  static const std::map<char, std::array<uint8_t, 7>> f = {
      {'0', {14, 17, 19, 21, 25, 17, 14}}, {'1', {4, 12, 4, 4, 4, 4, 14}},     {'2', {14, 17, 1, 2, 4, 8, 31}},
      {'3', {30, 1, 1, 14, 1, 1, 30}},     {'4', {2, 6, 10, 18, 31, 2, 2}},    {'5', {31, 16, 30, 1, 1, 17, 14}},
      {'6', {6, 8, 16, 30, 17, 17, 14}},   {'7', {31, 1, 2, 4, 8, 8, 8}},      {'8', {14, 17, 17, 14, 17, 17, 14}},
      {'9', {14, 17, 17, 15, 1, 2, 12}},   {'.', {0, 0, 0, 0, 0, 12, 12}},     {'-', {0, 0, 0, 31, 0, 0, 0}},
      {'+', {0, 4, 4, 31, 4, 4, 0}},       {' ', {0, 0, 0, 0, 0, 0, 0}},       {'(', {2, 4, 8, 8, 8, 4, 2}},
      {')', {8, 4, 2, 2, 2, 4, 8}},        {'/', {1, 1, 2, 4, 8, 16, 16}},     {':', {0, 12, 12, 0, 12, 12, 0}},
      {'_', {0, 0, 0, 0, 0, 0, 31}},       {'=', {0, 0, 31, 0, 31, 0, 0}},     {'%', {24, 25, 2, 4, 8, 19, 3}},
      {'a', {0, 0, 14, 1, 15, 17, 15}},    {'b', {16, 16, 22, 25, 17, 17, 30}}, {'c', {0, 0, 14, 16, 16, 17, 14}},
      {'d', {1, 1, 13, 19, 17, 17, 15}},   {'e', {0, 0, 14, 17, 31, 16, 14}},  {'f', {6, 9, 8, 28, 8, 8, 8}},
      {'g', {0, 15, 17, 17, 15, 1, 14}},   {'h', {16, 16, 22, 25, 17, 17, 17}}, {'i', {4, 0, 12, 4, 4, 4, 14}},
      {'j', {2, 0, 6, 2, 2, 18, 12}},      {'k', {16, 16, 18, 20, 24, 20, 18}}, {'l', {12, 4, 4, 4, 4, 4, 14}},
      {'m', {0, 0, 26, 21, 21, 17, 17}},   {'n', {0, 0, 22, 25, 17, 17, 17}},  {'o', {0, 0, 14, 17, 17, 17, 14}},
      {'p', {0, 0, 30, 17, 30, 16, 16}},   {'q', {0, 0, 13, 19, 15, 1, 1}},    {'r', {0, 0, 22, 25, 16, 16, 16}},
      {'s', {0, 0, 14, 16, 14, 1, 30}},    {'t', {8, 8, 28, 8, 8, 9, 6}},      {'u', {0, 0, 17, 17, 17, 19, 13}},
      {'v', {0, 0, 17, 17, 17, 10, 4}},    {'w', {0, 0, 17, 17, 21, 21, 10}},  {'x', {0, 0, 17, 10, 4, 10, 17}},
      {'y', {0, 0, 17, 17, 15, 1, 14}},    {'z', {0, 0, 31, 2, 4, 8, 31}},
  };
  return f;
}

struct Raster {
  int w, h;
  std::vector<uint8_t> px;
  Raster(int w_, int h_) : w(w_), h(h_), px(size_t(w_) * h_ * 3, 255) {}
  void set(int x, int y, std::array<uint8_t, 3> c) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    std::copy(c.begin(), c.end(), px.begin() + (size_t(y) * w + x) * 3);
  }
  void line(int x0, int y0, int x1, int y1, std::array<uint8_t, 3> c, int thick = 1) {
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    while (true) {
      for (int a = 0; a < thick; ++a)
        for (int b = 0; b < thick; ++b) set(x0 + a, y0 + b, c);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) err += dy, x0 += sx;
      if (e2 <= dx) err += dx, y0 += sy;
    }
  }
  // Text with its top-left corner at (x, y); unknown characters are drawn as '?'-less blanks.
  void text(int x, int y, const std::string& s, std::array<uint8_t, 3> c = {40, 40, 40}) {
    std::string t = s;
    for (char& ch : t) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    for (char ch : t) {
      auto it = font().find(ch);
      if (it != font().end())
        for (int r = 0; r < 7; ++r)
          for (int col = 0; col < 5; ++col)
            if (it->second[size_t(r)] & (16 >> col)) set(x + col, y + r, c);
      x += 6;
    }
  }
};

void put_u32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(char((v >> (8 * i)) & 0xff));
}

void chunk(std::string& out, const char* type, const std::string& data) {
  put_u32(out, uint32_t(data.size()));
  std::string td = std::string(type, 4) + data;
  out += td;
  put_u32(out, uint32_t(crc32(0, reinterpret_cast<const Bytef*>(td.data()), uInt(td.size()))));
}

std::string tick_label(double v) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e5 || a < 1e-3) return fmt::format("{:.1e}", v);
  if (a >= 100) return fmt::format("{:.0f}", v);
  if (a >= 1) return fmt::format("{:.2f}", v);
  return fmt::format("{:.3f}", v);
}

}  // namespace

void write_png_chart(const std::string& path, const Chart& ch) {
  Raster r(ch.width, ch.height);
  const int L = 70, R = ch.width - 20, T = 30, B = ch.height - 45;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  auto ty = [&](double y) { return ch.log_y ? std::log10(std::max(y, 1e-30)) : y; };
  auto tx = [&](double x) { return ch.log_x ? std::log10(std::max(x, 1e-30)) : x; };
  // A point is drawn when finite (and positive on a log axis).
  auto ok = [&](const Series& s, size_t i) {
    return std::isfinite(s.y[i]) && std::isfinite(s.x[i]) && (!ch.log_y || s.y[i] > 0) && (!ch.log_x || s.x[i] > 0);
  };
  for (const Series& s : ch.series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!ok(s, i)) continue;
      x0 = std::min(x0, tx(s.x[i])), x1 = std::max(x1, tx(s.x[i]));
      y0 = std::min(y0, ty(s.y[i])), y1 = std::max(y1, ty(s.y[i]));
    }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  const double pad = 0.04 * (y1 - y0);
  y0 -= pad, y1 += pad;
  auto px = [&](double x) { return L + int(std::lround((tx(x) - x0) / (x1 - x0) * (R - L))); };
  auto py = [&](double y) { return B - int(std::lround((ty(y) - y0) / (y1 - y0) * (B - T))); };
  const std::array<uint8_t, 3> grid{225, 225, 225}, axis{60, 60, 60};
  for (int i = 0; i <= 5; ++i) {
    const double yv = y0 + (y1 - y0) * i / 5, xv = x0 + (x1 - x0) * i / 5;
    const int yy = B - (B - T) * i / 5, xx = L + (R - L) * i / 5;
    r.line(L, yy, R, yy, grid);
    r.line(xx, T, xx, B, grid);
    r.text(4, yy - 3, tick_label(ch.log_y ? std::pow(10.0, yv) : yv));
    const std::string xl = tick_label(ch.log_x ? std::pow(10.0, xv) : xv);
    r.text(xx - 3 * int(xl.size()), B + 6, xl);
  }
  r.line(L, B, R, B, axis);
  r.line(L, T, L, B, axis);
  r.text(L, 10, ch.title);
  r.text((L + R) / 2 - 3 * int(ch.x_label.size()), B + 22, ch.x_label);
  if (!ch.y_label.empty()) r.text(L + 4, T + 4, ch.y_label);
  int legend_y = T + 4;
  for (const Series& s : ch.series) {
    for (size_t i = 1; i < s.x.size(); ++i)
      if (ok(s, i) && ok(s, i - 1)) r.line(px(s.x[i - 1]), py(s.y[i - 1]), px(s.x[i]), py(s.y[i]), s.rgb, 2);
    if (s.x.size() == 1 && ok(s, 0)) r.line(px(s.x[0]) - 2, py(s.y[0]), px(s.x[0]) + 2, py(s.y[0]), s.rgb, 3);
    r.line(R - 120, legend_y + 3, R - 100, legend_y + 3, s.rgb, 2);
    r.text(R - 95, legend_y, s.name);
    legend_y += 12;
  }
  // PNG: signature, IHDR (8-bit RGB), IDAT (filter byte 0 per row), IEND.
  std::string raw;
  raw.reserve(size_t(ch.height) * (size_t(ch.width) * 3 + 1));
  for (int y = 0; y < ch.height; ++y) {
    raw.push_back(0);
    raw.append(reinterpret_cast<const char*>(r.px.data()) + size_t(y) * ch.width * 3, size_t(ch.width) * 3);
  }
  uLongf zlen = compressBound(uLong(raw.size()));
  std::string z(zlen, '\0');
  DSA_CHECK(compress2(reinterpret_cast<Bytef*>(z.data()), &zlen, reinterpret_cast<const Bytef*>(raw.data()),
                      uLong(raw.size()), 6) == Z_OK,
            "png: zlib compression failed");
  z.resize(zlen);
  std::string out = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  put_u32(ihdr, uint32_t(ch.width));
  put_u32(ihdr, uint32_t(ch.height));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);
  chunk(out, "IHDR", ihdr);
  chunk(out, "IDAT", z);
  chunk(out, "IEND", "");
  std::ofstream f(path, std::ios::binary);
  f.write(out.data(), std::streamsize(out.size()));
  DSA_CHECK(f.good(), "cannot write {}", path);
}

}  // namespace dsa::train
