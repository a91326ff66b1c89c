// The six tool domains' vocabulary and data pools (internal to env/: synth.cc builds on it).
#pragma once
#include <string>
#include <vector>

namespace dsa::env {

// Every domain has the same shape — a parent table (people, stations, warehouses) and a child
// table of records that point to it, with an amount and a status — and its own names and data.
struct Domain {
  std::string name, title;
  std::string parent, parent_noun;         // table, singular noun ("customers", "customer")
  std::string child, child_noun;           // ("orders", "order")
  std::string rel;                         // "<parent> who placed <child>"
  std::string contact_col, contact_noun;   // ("email", "email address")
  std::string region_col, region_noun;     // ("city", "city")
  std::string label_col, label_noun;       // ("item", "item")
  std::string amount_col, amount_noun;     // ("total", "total")
  bool amount_int = false;
  double amount_lo = 1, amount_hi = 100;
  std::string unit;                        // "$" prefix or " mm" suffix (a leading space = suffix)
  std::string status_col;
  std::vector<std::string> statuses;
  std::string date_col;
  bool people = true;                      // parent names are person names
  std::vector<std::string> labels, regions, places;
  std::string contact_domain;              // e.g. "shop.example"
};

const std::vector<Domain>& domains();
const Domain& find_domain(const std::string& name);

}  // namespace dsa::env
