// tally-broker: the CURVE router and round coordinator. Thin: flags, signals, Broker::Run.
#include <malloc.h>
#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "broker/broker.h"
#include "schema/text.h"

using tally::ParseU32;

namespace {

tally::Broker* g_broker = nullptr;
volatile std::sig_atomic_t g_signal = 0;
void OnSignal(int sig) {
  g_signal = sig;
  if (g_broker) g_broker->Stop();  // only stores an atomic flag: async-signal-safe
}

constexpr const char* kUsage =
    "usage: tally-broker --keys DIR [--bind ADDRESS | --router ENDPOINT --phases ENDPOINT]\n"
    "                    [--captures DIR] [--deadline-ms MS] [--max-length L]\n"
    "\n"
    "Routes sealed envelopes between the parties in DIR/public and runs their rounds.\n"
    "  --keys DIR         key folder: private/broker.key_secret and the roster public/*.key\n"
    "  --bind ADDRESS     HOST or HOST:PORT to listen on: the router on PORT (default 7700),\n"
    "                     the phase channel on PORT+1; 0.0.0.0 for every interface\n"
    "  --router ENDPOINT  where nodes send (default tcp://127.0.0.1:7700; port * = any free)\n"
    "  --phases ENDPOINT  where phase changes are published (default tcp://127.0.0.1:7701)\n"
    "  --captures DIR     one capture file per round (default captures)\n"
    "  --deadline-ms MS   each phase's deadline before the round aborts, and the most a\n"
    "                     hospital may ask for (default 10000)\n"
    "  --max-length L     largest vector length a round may ask for (default 1048576)\n"
    "When ready it prints 'router ENDPOINT' and 'phases ENDPOINT' on stdout; logs go to stderr,\n"
    "one timestamped line per event, the last one saying why it stopped.\n"
    "SIGINT/SIGTERM abort the active round and exit 0.\n";

// This process's CPU time so far, all threads, in ms: what serving cost, for the last line.
std::string CpuMs() {
  rusage u{};
  if (::getrusage(RUSAGE_SELF, &u) != 0) return "?";
  const double ms = (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 +
                    (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
  return std::to_string(static_cast<long long>(ms));
}

int Usage(const std::string& error) {
  std::cerr << "tally-broker: " << error << "\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Vector rounds allocate and free the same few large buffers (8 MiB per million elements)
  // every round: keep freed memory in the process instead of unmapping it and faulting it back
  // in, page by page, next round (a fifth of a 10x1M round's CPU was page faults).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  tally::BrokerOptions options;
  bool bound = false, endpoint_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (i + 1 >= argc) return Usage("missing value for " + flag);
    std::string value = argv[++i];
    if (flag == "--keys") {
      options.keys_dir = value;
    } else if (flag == "--bind") {
      auto endpoints = tally::EndpointsOf(value);
      if (!endpoints.ok()) return Usage(endpoints.message());
      options.router_endpoint = endpoints->router;
      options.phases_endpoint = endpoints->phases;
      bound = true;
    } else if (flag == "--router") {
      options.router_endpoint = value;
      endpoint_given = true;
    } else if (flag == "--phases") {
      options.phases_endpoint = value;
      endpoint_given = true;
    } else if (flag == "--captures") {
      options.captures_dir = value;
    } else if (flag == "--deadline-ms") {
      if (!ParseU32(value, 1, options.rounds.deadline_ms))
        return Usage("bad --deadline-ms " + value);
    } else if (flag == "--max-length") {
      if (!ParseU32(value, 1, options.rounds.max_length) ||
          options.rounds.max_length > tally::kMaxVectorLength)
        return Usage("bad --max-length " + value + " (1.." +
                     std::to_string(tally::kMaxVectorLength) + ")");
    } else {
      return Usage("unknown option " + flag);
    }
  }
  if (options.keys_dir.empty()) return Usage("--keys is required");
  if (bound && endpoint_given) return Usage("give --bind, or --router and --phases, not both");

  const tally::LogSink log = tally::StderrLog();
  // The last line says why the broker ends and with which status.
  auto exit_with = [&log](int status, const std::string& reason, const std::string& more = "") {
    log("broker event=exit status=" + std::to_string(status) + " reason=" + tally::Quote(reason) +
        more);
    return status;
  };
  auto broker = tally::Broker::Create(options, log);
  if (!broker.ok()) return exit_with(2, broker.message());
  g_broker = broker->get();
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::cout << "router " << (*broker)->router_endpoint() << "\n"
            << "phases " << (*broker)->phases_endpoint() << std::endl;
  auto status = (*broker)->Run();
  g_broker = nullptr;
  const tally::BrokerCounters c = (*broker)->counters();
  const std::string totals =
      " routed=" + std::to_string(c.routed) + " rejected=" + std::to_string(c.rejected) +
      " rounds_done=" + std::to_string(c.rounds_done) +
      " rounds_aborted=" + std::to_string(c.rounds_aborted) +
      " second_connections=" + std::to_string(c.second_connections) +
      " capture_errors=" + std::to_string(c.capture_errors) + " cpu_ms=" + CpuMs();
  if (!status.ok()) return exit_with(1, status.message(), totals);
  const int sig = g_signal;
  return exit_with(0, sig == 0 ? "stopped" : std::string("stopped by SIG") + sigabbrev_np(sig),
                   totals);
}
