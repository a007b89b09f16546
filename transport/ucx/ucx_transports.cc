#include "transport/ucx/ucx_transports.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <vector>

namespace tandem::transport::ucx {

bool context_has_resource(ucp_context_h context, const std::string& resource) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  if (f == nullptr) return false;
  ucp_context_print_info(context, f);
  std::fclose(f);
  // Resource lines look like "#      resource 5  :  md 4  dev 3  flags -- cma/memory".
  const std::string dump(buf, len);
  std::free(buf);
  std::istringstream in(dump);
  for (std::string line; std::getline(in, line);) {
    if (line.find("resource") == std::string::npos) continue;
    const size_t at = line.rfind(' ');
    if (at != std::string::npos && line.substr(at + 1) == resource) return true;
  }
  return false;
}

std::string endpoint_transports(ucp_ep_h ep) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  if (f == nullptr) return "?";
  ucp_ep_print_info(ep, f);
  std::fclose(f);
  std::string dump(buf, len);
  std::free(buf);
  // Lane lines look like "#   lane[0]:  2:tcp/lo.0 md[1]  ..."; keep "tcp/lo".
  std::vector<std::string> seen;
  std::istringstream in(dump);
  for (std::string line; std::getline(in, line);) {
    size_t lane = line.find("lane[");
    if (lane == std::string::npos) continue;
    size_t colon = line.find(':', lane);
    if (colon == std::string::npos) continue;
    std::istringstream fields(line.substr(colon + 1));
    std::string tl;
    fields >> tl;  // "2:tcp/lo.0"
    size_t c = tl.find(':');
    if (c != std::string::npos) tl = tl.substr(c + 1);
    size_t dot = tl.rfind('.');
    if (dot != std::string::npos) tl = tl.substr(0, dot);
    bool dup = false;
    for (const auto& s : seen) dup = dup || s == tl;
    if (!dup && !tl.empty()) seen.push_back(tl);
  }
  if (seen.empty()) return dump;
  std::string out;
  for (const auto& s : seen) out += (out.empty() ? "" : " ") + s;
  return out;
}

}  // namespace tandem::transport::ucx
