#include <cstdio>
#include <string>

#include "launcher/commands.h"

namespace tandem::launcher {

int report_error(std::string_view command, const absl::Status& status) {
  std::string message(status.message());
  for (char& c : message) {
    if (c == '\n') c = ' ';
  }
  std::fprintf(stderr, "tandem %.*s: %s\n", static_cast<int>(command.size()), command.data(),
               message.c_str());
  switch (status.code()) {
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kDataLoss:
      return 1;
    default:
      return 2;
  }
}

}  // namespace tandem::launcher
