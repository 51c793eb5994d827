#include "coordinator/app/app.h"

#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "coordinator/journal/file_journal.h"
#include "coordinator/learned/learned_balancing.h"

#ifdef TG_HAVE_GATEWAY
#include "coordinator/gateway/gateway.h"
#endif

namespace tokengate::coordinator {

namespace {
Status writeReadyFile(const std::string& path, const std::vector<std::string>& wire,
                      uint16_t gateway_port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    for (const auto& ep : wire) out << "wire " << ep << "\n";  // --listen order
    if (gateway_port) out << "gateway " << gateway_port << "\n";
    out << "ready 1\n";
    if (!out) return absl::UnavailableError(fmt::format("cannot write {}", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::UnavailableError(fmt::format("cannot rename {}: {}", tmp, ec.message()));
  return absl::OkStatus();
}
}  // namespace

int runCoordinator(AppConfig config) {
  // Signals go to a dedicated thread; block them everywhere else first.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // The cost model replaces the placement policy once the loop runs; until then (and if it is
  // not wanted) the core uses least-outstanding.
  {
    // A new incarnation per process; without a journal also a random epoch (journal.h): a
    // restart forgets every job, so do not reuse their ids either.
    std::random_device rd;
    config.server.core.incarnation = (uint64_t{rd()} << 32 | rd()) | 1;
    if (config.journal_path.empty())
      config.server.core.first_job_id =
          firstIdOf(config.first_epoch ? config.first_epoch : 1 + rd() % kMaxEpoch);
  }
  // The journal is locked and read before anything else: a second coordinator on the same
  // file stops here, having touched nothing. It is rewritten (activate) only once this process
  // is fully started. It outlives the loop (declared before the server would be better, but
  // the core only calls it from the loop thread, which has ended before it is destroyed).
  std::unique_ptr<journal::FileJournal> jobs_journal;
  auto replay = std::make_shared<journal::Replay>();
  if (!config.journal_path.empty()) {
    journal::FileJournalOptions jo;
    jo.keep_finished = config.server.core.finished_jobs_kept;
    jo.keep_keys = config.server.core.max_idempotency_keys;
    jo.reset = config.journal_reset;
    if (const uint32_t e = config.first_epoch) jo.random_epoch = [e] { return e; };
    auto j = journal::FileJournal::open(config.journal_path, jo, replay.get());
    if (!j.ok()) {
      spdlog::error("{}", j.status().message());
      return 1;
    }
    jobs_journal = *std::move(j);
  }
  if (!config.model_out.empty()) config.learn = true;  // nothing to save without training
  const bool want_model =
      config.server.core.scheduler == "xgboost" || config.learn || !config.model_path.empty();
  const bool want_balancing = want_model || !config.trace_out.empty();
  if (config.server.core.scheduler == "xgboost") config.server.core.scheduler = "least-outstanding";
  CoordinatorServer server(config.server);
  if (auto st = server.bind(); !st.ok()) {
    spdlog::error("{}", st.message());
    return 1;
  }
  if (jobs_journal) {
    jobs_journal->exportMetrics(*server.metricsRegistry());
    spdlog::info(
        "journal {}: {} records, {} unfinished jobs to resume, {} finished kept, {} idempotency "
        "keys with results, {} quarantined nodes, epoch {}{}{}",
        config.journal_path, replay->records, replay->unfinished.size(), replay->finished.size(),
        replay->keys.size(), replay->quarantines.size(), replay->epoch,
        replay->epoch_random ? " (random: the file had none)" : "",
        replay->damaged_bytes ? fmt::format(", {} damaged bytes in {} ranges skipped",
                                            replay->damaged_bytes, replay->damage.size())
                              : std::string());
    server.post([replay, jr = jobs_journal.get()](CoordinatorCore& core) {
      // Quarantines first: no convicted node may be given a resumed job's tokens.
      for (const auto& q : replay->quarantines) core.restoreQuarantine(q);
      // Keys first: a resumed job's keyed token whose result was journalled completes with it.
      for (auto& k : replay->keys) core.restoreKey(k.key, k.token_id, std::move(k.value));
      replay->keys.clear();
      for (auto& s : replay->finished) core.restoreFinished(std::move(s));
      for (auto& a : replay->unfinished) {
        if (Status st = core.restoreJob(a.id, std::move(a.spec), a.incarnation, &a.checkpoint);
            !st.ok())
          spdlog::error("journal: job {} cannot be resumed: {}", a.id, st.message());
        else
          spdlog::info("journal: resumed job {} ({} checkpointed token results)", a.id,
                       a.checkpoint.size());
      }
      core.setNextJobId(firstIdOf(replay->epoch));
      core.setJournal(jr);
    });
  }
  // Destroyed before the server although the core keeps callbacks into it: they only run on
  // the loop thread, and server.run() has returned by then.
  std::unique_ptr<learned::LearnedBalancing> balancing;
  if (want_balancing) {
    learned::LearnedConfig lc;
    lc.model_path = config.model_path;
    lc.model_out = config.model_out;
    lc.trace_out = config.trace_out;
    if (config.model_drift_check >= 0)
      lc.trainer.drift_check_samples = static_cast<size_t>(config.model_drift_check);
    if (config.xgb_horizon_ms >= 0)
      lc.scheduler.queue_horizon_ns = lc.scheduler.fallback_horizon_ns =
          config.xgb_horizon_ms * 1e6;
    lc.place = want_model;
    // A loaded model without --learn stays fixed; otherwise train online from telemetry.
    lc.train = want_model && (config.learn || config.model_path.empty());
    const bool train = lc.train;
    balancing = std::make_unique<learned::LearnedBalancing>(std::move(lc), SystemClock::instance(),
                                                            server.metricsRegistry());
    (void)balancing->loadModel();  // logs the error; the heuristic serves meanwhile
    (void)balancing->openTrace();  // logs the error; runs without a trace
    balancing->start();
    server.post([b = balancing.get()](CoordinatorCore& core) { b->install(core); });
    if (want_model)
      spdlog::info("cost model placement enabled ({}{}{})",
                   train ? "online training" : "fixed model",
                   config.model_path.empty() ? "" : ", --model " + config.model_path,
                   config.model_out.empty() ? "" : ", --model-out " + config.model_out);
  }
  uint16_t gateway_port = 0;
#ifdef TG_HAVE_GATEWAY
  std::unique_ptr<gateway::Gateway> gw;
  if (!config.gateway.empty()) {
    gateway::GatewayConfig gc;
    auto colon = config.gateway.rfind(':');
    if (colon == std::string::npos) {
      spdlog::error("--gateway must be host:port, got '{}'", config.gateway);
      return 2;
    }
    gc.bind_address = config.gateway.substr(0, colon);
    gc.port = static_cast<uint16_t>(std::stoi(config.gateway.substr(colon + 1)));
    std::string token = config.gateway_token;
    if (token.empty())
      if (const char* env = std::getenv("TG_GATEWAY_TOKEN")) token = env;
    if (!token.empty()) gc.admin_tokens.push_back(token);
    if (!config.gateway_viewer_token.empty())
      gc.viewer_tokens.push_back(config.gateway_viewer_token);
    if (!config.gateway_operator_token.empty())
      gc.operator_tokens.push_back(config.gateway_operator_token);
    gc.allow_anonymous_read = config.gateway_anonymous_read;
    gc.ready_min_nodes = config.gateway_ready_min_nodes;
    gc.allowed_origins = config.allowed_origins;
    gateway::addAllowedOriginsFromEnv(gc);
    if (auto st = gateway::addLimitsFromEnv(gc); !st.ok()) {
      spdlog::error("gateway: {}", st.message());
      return 2;
    }
    gc.tls_cert_file = config.tls_cert;
    gc.tls_key_file = config.tls_key;
    if (token.empty() && !gc.allow_anonymous_read)
      spdlog::warn(
          "gateway has no token (set TG_GATEWAY_TOKEN or --gateway-token): control is refused");
    gw = std::make_unique<gateway::Gateway>(std::move(gc), server);
    if (auto st = gw->start(); !st.ok()) {
      spdlog::error("gateway: {}", st.message());
      return 1;
    }
    gateway_port = gw->port();
    spdlog::info("gateway on http://{}:{}/ (WebSocket /ws, metrics /metrics)",
                 config.gateway.substr(0, colon), gateway_port);
  }
#else
  if (!config.gateway.empty()) spdlog::warn("this build has no gateway; --gateway ignored");
#endif
  // Fully started (ports bound): now the journal may be rewritten, with this process's epoch in
  // its header, durable before the first id of it is handed out.
  if (jobs_journal) {
    if (Status st = jobs_journal->activate(); !st.ok()) {
      spdlog::error("{}", st.message());
      return 1;
    }
  }
  if (!config.ready_file.empty()) {
    if (auto st = writeReadyFile(config.ready_file, server.endpoints(), gateway_port); !st.ok()) {
      spdlog::error("{}", st.message());
      return 1;
    }
  }
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("signal {}: stopping", sig);
    server.stop();
  });
  server.run();
#ifdef TG_HAVE_GATEWAY
  if (gw) gw->stop();
#endif
  if (balancing) {
    if (const auto* s = balancing->scheduler(); s && s->predictedTokens() > 0)
      spdlog::info(
          "cost model: {} tokens costed ({} from the held-back cache, {} model rows), {:.0f} "
          "ns/token; {} reclassifications; telemetry kept {} of {}",
          s->predictedTokens(), s->cacheHits(), s->modelRows(),
          static_cast<double>(s->predictNs()) / static_cast<double>(s->predictedTokens()),
          s->reclassifications(), balancing->samplesKept(), balancing->samplesSeen());
    if (const auto* s = balancing->scheduler()) {
      std::string speeds;
      for (uint32_t i = 0; i < s->nodeSlots(); ++i)
        speeds += fmt::format("{}{:.2f}", i ? " " : "", s->nodeSpeed(i));
      spdlog::info(
          "cost model: learned node speeds by slot: [{}]; {} placements held back by "
          "the queue horizon",
          speeds, s->heldBack());
      spdlog::info(
          "placement gate: {} places, {} switches; |ln error| model {:.3f} vs running mean "
          "{:.3f} over {} tokens; realised regret {:.3f} over {} compared tokens",
          s->placementMode(), s->modeSwitches(), s->modelError(), s->fallbackError(),
          s->scoredTokens(), s->placementRegret(), s->comparedTokens());
      const auto ts = balancing->trainer().stats();
      spdlog::info(
          "cost model: active {} (version {}); {} trainings ({} accepted, {} rejected, "
          "{} failed, {} skipped for too little work), last R² {:.3f} on {} held-out samples, "
          "{:.0f} ms",
          ts.active_model, ts.model_version, ts.retrain_count, ts.accepted_count, ts.rejected_count,
          ts.failed_count, ts.skipped_count, ts.last_quality.r2, ts.last_quality.n_test,
          static_cast<double>(ts.last_train_duration) / 1e6);
    }
    balancing->stop();
  }
  // Wake the signal thread if it is still waiting.
  pthread_kill(signal_thread.native_handle(), SIGTERM);
  signal_thread.join();
  return 0;
}

}  // namespace tokengate::coordinator
