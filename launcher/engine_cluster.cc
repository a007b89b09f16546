#include "launcher/engine_cluster.h"

#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "launcher/auto_layout.h"
#include "launcher/commands.h"

namespace tandem::launcher {

int run_engine_cluster(std::string_view command, Cluster& cluster, engine::EngineOptions options,
                       const std::function<int(engine::Engine&)>& drive) {
  options.comm = cluster.comm();
  options.ranks_on_this_box = cluster.ranks_on_this_box();
  if (absl::Status s = choose_layout(cluster, options); !s.ok()) {
    return report_error(command, s);
  }
  const auto& thread_comms = cluster.thread_ranks();
  std::vector<absl::Status> thread_status(thread_comms.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < thread_comms.size(); ++i) {
    threads.emplace_back([&, i] {
      engine::EngineOptions o = options;
      o.comm = thread_comms[i].get();
      auto e = engine::Engine::Load(o);
      thread_status[i] = e.ok() ? (*e)->run_worker() : e.status();
    });
  }
  int code = 0;
  auto loaded = engine::Engine::Load(options);
  if (!loaded.ok()) {
    code = report_error(command, cluster.size() > 1
                                     ? absl::Status(loaded.status().code(),
                                                    absl::StrCat("rank ", cluster.rank(), ": ",
                                                                 loaded.status().message()))
                                     : loaded.status());
  } else if (cluster.rank() == 0) {
    code = drive(**loaded);
    loaded->reset();  // shuts the workers down
  } else if (absl::Status s = (*loaded)->run_worker(); !s.ok()) {
    code = report_error(command, absl::Status(s.code(), absl::StrCat("rank ", cluster.rank(), ": ",
                                                                     s.message())));
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < thread_status.size() && code == 0; ++i) {
    if (!thread_status[i].ok()) code = report_error(command, thread_status[i]);
  }
  return code;
}

}  // namespace tandem::launcher
