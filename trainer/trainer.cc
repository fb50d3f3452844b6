#include "trainer/trainer.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/log.h"
#include "base/path_status.h"
#include "checkpoint/env.h"
#include "checkpoint/reader.h"
#include "comm/consistency.h"
#include "comm/gradient_bucketer.h"
#include "comm/mpi_communicator.h"
#include "comm/peer_lost.h"
#include "model/generate.h"
#include "model/gpt.h"
#include "model/kernels.h"
#include "model/profiled_kernels.h"
#include "trainer/batch_loader.h"
#include "trainer/comm_backend.h"
#include "trainer/comm_timeout.h"
#include "trainer/config.h"
#include "trainer/data_checksums.h"
#include "trainer/data_parallel.h"
#include "trainer/device.h"
#include "trainer/hf_gpt2_weights.h"
#include "trainer/memory_budget.h"
#include "trainer/metrics.h"
#include "trainer/optimizer.h"
#include "trainer/rank_agreement.h"
#include "trainer/run_directory_lock.h"
#include "trainer/schedule.h"
#include "trainer/shared_dir_probe.h"
#include "trainer/tokenizer_file.h"
#include "trainer/training_checkpoints.h"

namespace dropk {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// What checkpoints record of the data trained on, and resume checks.
DataIdentity IdentityOf(const TrainingData& data) {
  DataIdentity identity;
  identity.set_dataset_id(data.train.dataset_id());
  identity.set_train_tokens(data.train.size());
  identity.set_val_tokens(data.val.size());
  identity.set_tokens_crc32c(data.tokens_crc);
  return identity;
}

// One rank's state for a whole run.
class TrainingRun {
 public:
  TrainingRun(const TrainConfig& config, Communicator& comm, std::ostream& log,
              const TrainingSeams& seams)
      : config_(config),
        seams_(seams),
        comm_(comm),
        log_(log),
        all_ranks_log_(log),
        rank_(comm.Rank()),
        world_(comm.Size()) {}

  // Run(), with a failure of the device turned into DeviceFailureStatus.
  absl::StatusOr<TrainSummary> RunUnlessDeviceFails() {
    try {
      absl::StatusOr<TrainSummary> summary = Run();
      // Another failure (a full disk under metrics or the data, a peer's
      // error) must not abandon a background save that was about to commit
      // the steps since the last one: alone, finish it (file I/O only; with
      // peers, finishing is collective and they are elsewhere). Not after a
      // loss that is not finite: that save may hold the diverged parameters.
      if (!summary.ok() && !diverged_ && world_ == 1 && checkpointer_ != nullptr) {
        if (absl::Status s = checkpointer_->Finish(RankLog()); !s.ok()) {
          RankLog() << "dropk-train: the background save in flight failed too: " << s.message()
                    << "\n";
        }
      }
      return summary;
    } catch (const DeviceError& e) {
      // Nothing is read from the device any more. A background save that
      // was started before the failure holds host copies taken while the
      // device still worked (Save synchronises first, and a fault surfaces
      // at the first synchronisation after it), so it is as sound as any
      // earlier checkpoint: alone, finish it (file I/O only). With peers,
      // leave it: finishing is collective and the peers are elsewhere in
      // the loop; unwinding joins its writer and it stays invisible.
      if (world_ == 1 && checkpointer_ != nullptr) (void)checkpointer_->Finish(RankLog());
      return DeviceFailureStatus(e);
    }
  }

 private:
  absl::StatusOr<TrainSummary> Run() {
    if (absl::Status s = Setup(); !s.ok()) return s;
    if (summary_.nothing_to_train) {
      summary_.final_params.resize(gpt_->num_params());
      kernels_->CopyToHost(summary_.final_params.data(), gpt_->params(),
                           gpt_->num_params() * sizeof(float));
      return std::move(summary_);
    }
    const int64_t max_steps = config_.max_iters();
    start_ = Clock::now();
    for (int64_t step = first_step_; step <= max_steps; ++step) {
      MetricsRow row;
      row.step = step;
      row.lr = LearningRateAt(config_, step);
      const bool evaluate = step % config_.eval_interval() == 0 || step == max_steps;
      if (evaluate) {
        absl::StatusOr<std::optional<float>> train = Evaluate(*eval_train_batches_);
        if (!train.ok()) return train.status();
        absl::StatusOr<std::optional<float>> val = std::optional<float>();
        if (train->has_value()) val = Evaluate(*eval_val_batches_);
        if (!val.ok()) return val.status();
        if (!val->has_value()) {  // a stop signal cut the evaluation short
          if (absl::Status s = StopDuringEvaluation(step); !s.ok()) return s;
          break;
        }
        row.eval_train_loss = summary_.eval_train_loss = **train;
        row.val_loss = summary_.val_loss = **val;
      }
      if (step == max_steps) {  // the last iteration only evaluates the final parameters
        // The loss of the last step trained (step max_steps - 1, or the
        // checkpoint's when a resume starts here); max_iters 0 trains none.
        if (step > 0) row.train_loss = summary_.last_train_loss;
        if (absl::Status s = Report(row, /*window_tokens=*/0, 0.0); !s.ok()) return s;
        break;
      }
      absl::StatusOr<std::optional<float>> trained = TrainStep(step, row.lr);
      if (!trained.ok()) return trained.status();
      if (!trained->has_value()) {  // a stop signal between micro-batches
        if (absl::Status s = StopDuringStep(step); !s.ok()) return s;
        break;
      }
      const absl::StatusOr<float> loss = **trained;
      summary_.steps = step + 1;
      // Moves a background save on: every rank, every step, while one is
      // pending. Its collectives and the next save's wait for the other
      // ranks as long as a step's do.
      checkpointer_->set_peer_timeout(CommOptions().timeout);
      if (absl::Status s = checkpointer_->Poll(RankLog()); !s.ok()) return s;
      const int check_every = config_.consistency_check_every();
      if (world_ > 1 && check_every > 0 && (step + 1) % check_every == 0) {
        if (absl::Status s = CheckParametersAgree(step + 1); !s.ok()) return s;
      }
      const bool log = step % config_.log_interval() == 0 || evaluate;
      absl::StatusOr<bool> stop = StopRequestedOnAnyRank();
      if (!stop.ok()) return stop.status();
      const bool save = *stop || checkpointer_->Due(step + 1, max_steps);
      // The final row and a checkpoint report this step's own loss, so it is
      // averaged over ranks whenever one of them follows, not only on log steps.
      if (log || save || step + 1 == max_steps) {
        absl::StatusOr<float> mean_loss = MeanOverRanks(*loss);
        if (!mean_loss.ok()) return mean_loss.status();
        if (!std::isfinite(*mean_loss)) {
          diverged_ = true;  // a save in flight may hold the diverged parameters: leave it
          const std::string remedy =
              config_.grad_clip() > 0
                  ? absl::StrCat("lower learning_rate (", config_.learning_rate(),
                                 ") or grad_clip (", config_.grad_clip(), ")")
                  : absl::StrCat("lower learning_rate (", config_.learning_rate(),
                                 ") or enable grad_clip");
          // Resumed parameters that already give it are the checkpoint's fault,
          // not the learning rate's.
          const std::string resumed =
              step == first_step_ && first_step_ > 0
                  ? absl::StrCat("; the parameters resumed from (", CheckpointDirName(step),
                                 ") already give it: resume from an earlier checkpoint")
                  : "";
          return absl::InternalError(absl::StrCat("step ", step, ": training loss is ", *mean_loss,
                                                  "; ", remedy, resumed,
                                                  checkpointer_->DivergenceAdvice(config_, step)));
        }
        // The parameters this step started from (those after `step` steps)
        // gave a finite loss: retention keeps a checkpoint of them or older.
        checkpointer_->NoteGoodParameters(step);
        row.train_loss = summary_.last_train_loss = *mean_loss;
      }
      if (log) {
        if (absl::Status s = Report(row, window_tokens_, window_seconds_); !s.ok()) return s;
        window_tokens_ = 0;
        window_seconds_ = 0;
        window_comm_ = {};
      }
      if (save) {
        if (absl::Status s = SaveCheckpoint(step + 1); !s.ok()) return s;
      }
      if (*stop) {
        summary_.stopped_by_signal = true;
        break;
      }
    }
    // The last save (the final one, or the one a signal asked for) is
    // committed before training reports that it ended.
    if (absl::Status s = checkpointer_->Finish(RankLog()); !s.ok()) return s;
    summary_.elapsed_s = SecondsSince(start_);
    const int64_t steps_trained = summary_.steps - first_step_;
    if (profiler_ != nullptr && rank_ == 0 && steps_trained > 0) {
      log_ << "profile of rank 0 over " << steps_trained
           << " training steps (each op timed to completion; evaluation excluded):\n"
           << profiler_->Report(steps_trained, train_seconds_) << std::flush;
    }
    summary_.tokens_per_s = train_seconds_ > 0 ? static_cast<double>(tokens_per_step_) *
                                                     (summary_.steps - first_step_) / train_seconds_
                                               : 0;
    summary_.final_params.resize(gpt_->num_params());
    kernels_->CopyToHost(summary_.final_params.data(), gpt_->params(),
                         gpt_->num_params() * sizeof(float));
    if (config_.sample_tokens() > 0 && !summary_.stopped_by_signal) {
      if (absl::Status s = Sample(); !s.ok()) return s;
    }
    return std::move(summary_);
  }

  absl::Status Setup() {
    absl::StatusOr<TrainingData> data = LoadTrainingData(config_.data_dir());
    if (!data.ok()) return data.status();
    data_ = std::make_unique<TrainingData>(*std::move(data));
    // Before any collective whose size the config decides.
    if (absl::Status s =
            CheckRanksAgree(RunFingerprint(config_, data_->tokenizer.proto(), data_->train.size(),
                                           data_->val.size(), data_->tokens_crc),
                            comm_, CommOptions());
        !s.ok()) {
      return s;
    }
    if (rank_ == 0) WarnOfIdenticalTokenFiles();
    const KernelOptions kernel_options = TrainingKernelOptions(
        config_, ThreadsPerRank(config_.num_threads(), LocalWorldSize()), LocalRank());
    // Which ranks use this rank's GPU, for the memory check below: by UUID,
    // since ranks that each see only their own GPU (srun --gpus-per-task=1)
    // all number it 0. Here, where every rank arrives (the check above was a
    // collective), not after a check that may fail on one rank only.
    int ranks_on_my_gpu = 1;
    if (config_.device() == TrainConfig::CUDA) {
      absl::StatusOr<std::vector<std::array<uint8_t, 16>>> uuids =
          ExchangeGpuUuids(comm_, CudaDeviceUuid(kernel_options.cuda_device), CommOptions());
      if (!uuids.ok()) return uuids.status();
      ranks_on_my_gpu = RanksOnMyGpu(*uuids, rank_, LocalWorldSize(), CudaDeviceCount(),
                                     kernel_options.cuda_device);
    }
    if (absl::Status s = ValidateAgainstData(config_, data_->train.size(), data_->val.size());
        !s.ok()) {
      return s;
    }
    if (absl::Status s = CheckSampleStreamsFit(config_, world_); !s.ok()) return s;
    if (config_.sample_tokens() > 0) {
      absl::StatusOr<std::vector<int32_t>> encoded =
          data_->tokenizer.Encode(config_.sample_prompt());
      // The default prompt ("\n") is not in the vocabulary of a corpus
      // without line breaks: the line said what was wrong with a field the
      // user never set, not what to set.
      if (!encoded.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "sample_prompt: ", encoded.status().message(),
            "; set sample_prompt to text of data_dir=", config_.data_dir(),
            "'s vocabulary, or sample_tokens=0 to sample nothing"));
      }
      if (encoded->empty()) return absl::InvalidArgumentError("sample_prompt: must not be empty");
      prompt_ = *std::move(encoded);
    }
    // Every rank: each then refuses alike, before anything is made there.
    if (absl::Status s = CheckRunDirectoriesOutsideCheckpoints(config_); !s.ok()) return s;
    if (rank_ == 0) {
      std::error_code ec;
      std::filesystem::create_directories(config_.out_dir(), ec);
      if (ec) {
        return DirectoryCreationError(
            absl::StrCat("out_dir=", config_.out_dir(), ": cannot create"), config_.out_dir(), ec);
      }
    }

    // Refuse a run that cannot fit before allocating any of it: an
    // allocation failure or the OOM killer mid-setup explains nothing.
    const bool flash_attention =
        config_.device() == TrainConfig::CUDA &&
        CudaFlashAttentionApplies(kernel_options, config_.n_embd() / config_.n_head());
    absl::StatusOr<TrainingMemory> need = TrainingMemoryNeed(
        config_, data_->tokenizer.vocab_size(),
        ThreadsPerRank(config_.num_threads(), LocalWorldSize()), world_, flash_attention);
    if (!need.ok()) return need.status();
    if (absl::Status s =
            CheckTrainingMemory(config_, *need, LocalWorldSize(), AvailableMemoryNow());
        !s.ok()) {
      return s;
    }
    if (config_.device() == TrainConfig::CUDA) {
      if (absl::Status s =
              CheckGpuMemory(config_, *need, kernel_options.cuda_device, ranks_on_my_gpu,
                             CudaFreeBytes(kernel_options.cuda_device));
          !s.ok()) {
        return s;
      }
    }

    absl::StatusOr<std::unique_ptr<Kernels>> kernels =
        seams_.make_kernels ? seams_.make_kernels(TrainingDevice(config_), kernel_options)
                            : MakeKernels(TrainingDevice(config_), kernel_options);
    if (!kernels.ok()) return kernels.status();
    kernels_ = *std::move(kernels);
    if (config_.profile()) {
      // Timed inside training steps only (TrainStep unpauses it).
      auto profiled = std::make_unique<ProfiledKernels>(std::move(kernels_));
      profiler_ = profiled.get();
      profiler_->set_paused(true);
      kernels_ = std::move(profiled);
    }
    device_memory_ = MemoryKindOf(kernels_->device());
    const GptConfig shape{data_->tokenizer.vocab_size(), config_.block_size(), config_.n_layer(),
                          config_.n_head(), config_.n_embd()};
    absl::StatusOr<std::unique_ptr<Gpt>> gpt =
        Gpt::Create(shape, config_.batch_size(), kernels_.get());
    if (!gpt.ok()) return gpt.status();
    gpt_ = *std::move(gpt);
    gpt_->InitWeights(config_.seed());
    if (rank_ == 0 && !config_.init_from().empty()) {
      if (absl::Status s = InitFromFileUnlessResuming(shape); !s.ok()) return s;
    }
    // InitWeights' upload is queued on the compute stream; the broadcast runs
    // on the communicator's own stream (NCCL) or staging stream (MPI), which
    // would otherwise read (root) or overwrite (others) the parameters while
    // the upload may still be landing.
    kernels_->Synchronize();
    // Every rank starts from rank 0's parameters (DESIGN invariant 2).
    if (absl::Status s =
            comm_
                .Broadcast({gpt_->params(), gpt_->num_params(), DataType::kFloat32, device_memory_},
                           0, CommOptions())
                ->Wait();
        !s.ok()) {
      return s;
    }
    // The broadcast wrote the parameters behind the kernels' back.
    kernels_->NoteExternalWrite(gpt_->params(), gpt_->num_params() * sizeof(float));
    optimizer_ = std::make_unique<AdamWOptimizer>(
        gpt_.get(), AdamWOptions{config_.beta1(), config_.beta2(), 1e-8f, config_.weight_decay()});
    if (absl::Status s = SetUpCheckpoints(); !s.ok()) return s;
    // The job goes ahead: only now does it name itself in the locks, so a
    // start refused above left the earlier run's notes as they were.
    for (RunDirectoryLock& lock : run_locks_) lock.RecordHolder(log_);
    if (summary_.nothing_to_train) return absl::OkStatus();

    const int B = config_.batch_size(), T = config_.block_size();
    const int accum = config_.gradient_accumulation_steps();
    const uint64_t global_batch = static_cast<uint64_t>(B) * accum * world_;
    train_batches_ = std::make_unique<BatchLoader>(&data_->train, config_.seed(), T, kTrainBatches,
                                                   global_batch);
    const uint64_t eval_batch = static_cast<uint64_t>(B) * world_;
    eval_train_batches_ = std::make_unique<BatchLoader>(&data_->train, config_.seed(), T,
                                                        kEvalTrainBatches, eval_batch);
    eval_val_batches_ =
        std::make_unique<BatchLoader>(&data_->val, config_.seed(), T, kEvalValBatches, eval_batch);
    inputs_.resize(static_cast<size_t>(B) * T);
    targets_.resize(inputs_.size());
    tokens_per_step_ = static_cast<int64_t>(global_batch) * T;

    std::vector<size_t> offsets;
    for (const ParamTensor& t : gpt_->layout().tensors()) offsets.push_back(t.offset);
    const size_t cap = static_cast<size_t>(config_.bucket_cap_mb() * 1024.0 * 1024.0);
    bucketer_ = std::make_unique<GradientBucketer>(
        &comm_, gpt_->grads(), gpt_->num_params(), device_memory_,
        PlanBuckets(offsets, gpt_->num_params(), cap, sizeof(float)), config_.overlap_comm(),
        CommOptions());

    if (rank_ == 0) {
      log_ << absl::StrFormat(
                  "dropk-train: %d parameters (%d layers, %d heads, %d embd, vocab %d, context "
                  "%d), %d tokens/step, %d rank(s) over %s, %d gradient bucket(s) (overlap %s), "
                  "%s\n",
                  gpt_->num_params(), shape.n_layer, shape.n_head, shape.n_embd, shape.vocab_size,
                  T, tokens_per_step_, world_, comm_.BackendName(), bucketer_->buckets().size(),
                  config_.overlap_comm() ? "on" : "off", kernels_->Describe())
           << std::flush;
    }
    return absl::OkStatus();
  }

  // InitFromFile, unless the run resumes: a checkpoint takes precedence
  // over init_from, so it is not read. A fine-tuning job restarted with its
  // command (--init_from and --resume=latest) read the whole file again
  // first, and could not resume when the file had gone. Resuming is
  // --resume=PATH, or latest with a checkpoint there: MaybeResume then
  // loads one or fails.
  absl::Status InitFromFileUnlessResuming(const GptConfig& shape) {
    const bool resuming =
        !config_.resume().empty() &&
        (config_.resume() != "latest" ||
         !CheckpointCandidates(CheckpointsDirOf(config_), nullptr, seams_.checkpoint_env).empty());
    if (!resuming) return InitFromFile(shape);
    log_ << "dropk-train: init_from=" << config_.init_from()
         << " not read: --resume=" << config_.resume()
         << " resumes from a checkpoint, which takes precedence\n"
         << std::flush;
    return absl::OkStatus();
  }

  // Overwrites the parameters with config.init_from's (rank 0 only: the
  // broadcast after it gives them to every rank).
  absl::Status InitFromFile(const GptConfig& shape) {
    absl::StatusOr<HfGpt2Weights> weights =
        ReadHfGpt2Weights(config_.init_from(), shape, data_->tokenizer);
    if (!weights.ok()) return weights.status();
    kernels_->CopyToDevice(gpt_->params(), weights->params.data(),
                           weights->params.size() * sizeof(float));
    log_ << "dropk-train: " << weights->note << "\n" << std::flush;
    return absl::OkStatus();
  }

  // One warning line for each two token files of data_dir (either split)
  // that hold the same tokens: a copied shard is trained on twice.
  void WarnOfIdenticalTokenFiles() {
    std::vector<const TokenFile*> files;
    for (const TokenDataset* split : {&data_->train, &data_->val}) {
      for (const TokenFile& file : split->files()) files.push_back(&file);
    }
    for (const auto& [a, b] : IdenticalTokenFiles(files)) {
      log_ << "dropk-train: warning: data_dir=" << config_.data_dir() << ": " << files[a]->path()
           << " and " << files[b]->path() << " hold the same " << files[a]->size()
           << " tokens (a token file copied by hand?); both are read, so they count twice\n";
    }
    log_ << std::flush;
  }

  // Claims out_dir and the checkpoint directory for this job (both: another
  // job may share either one alone), before anything is read or written
  // there. Setup records this job in them once every check has passed.
  absl::Status LockRunDirectories() {
    const std::string checkpoints = CheckpointsDirOf(config_);
    std::error_code ec;
    const bool shared = std::filesystem::weakly_canonical(checkpoints, ec) ==
                        std::filesystem::weakly_canonical(config_.out_dir(), ec);
    std::vector<std::pair<std::string, const char*>> dirs = {{config_.out_dir(), "out_dir"}};
    if (!shared) dirs.emplace_back(checkpoints, "checkpoint_dir");
    for (const auto& [dir, field] : dirs) {
      absl::StatusOr<RunDirectoryLock> lock =
          RunDirectoryLock::Acquire(dir, field, log_, {.stop_requested = StopRequested});
      if (!lock.ok()) return lock.status();
      run_locks_.push_back(*std::move(lock));
    }
    return absl::OkStatus();
  }

  // Resumes per config.resume (every rank reads the checkpoint itself, so any
  // world size can resume any checkpoint), opens metrics.jsonl (appending
  // after a resume) and prepares saving.
  absl::Status SetUpCheckpoints() {
    InstallStopSignalHandlers();
    if (rank_ == 0) {
      if (absl::Status s = LockRunDirectories(); !s.ok()) return s;
    }
    // Refuse now, not at the first save, when the hosts do not share it.
    if (absl::Status s = CheckDirectorySharedByAllRanks(CheckpointsDirOf(config_), "checkpoint_dir",
                                                        comm_, CommOptions());
        !s.ok()) {
      return s;
    }
    // Every save replaces LATEST by rename, which a directory there refuses:
    // the run would fail at its first save, after the training before it.
    const std::string latest = CheckpointsDirOf(config_) + "/" + kLatestFileName;
    std::error_code ec;
    if (std::filesystem::is_directory(std::filesystem::symlink_status(latest, ec))) {
      return absl::FailedPreconditionError(absl::StrCat(
          "checkpoint_dir=", CheckpointsDirOf(config_), ": ", latest,
          " is a directory; remove it (each save writes the newest checkpoint's name there)"));
    }
    absl::StatusOr<ResumePoint> resume =
        MaybeResume(config_, data_->tokenizer.proto(), IdentityOf(*data_), *gpt_, *optimizer_,
                    world_, RankLog(), seams_.checkpoint_env);
    if (!resume.ok()) return resume.status();
    if (absl::Status s = CheckRanksResumedAlike(*resume); !s.ok()) return s;
    first_step_ = resume->step;
    summary_.steps = resume->step;
    summary_.last_train_loss = resume->last_train_loss;
    summary_.resumed_from = resume->dir;
    // A job relaunched after it finished: evaluating again appended a
    // second row for the step and logged "0 tok/s". Every rank resumed
    // alike (checked above), so all stop here.
    if (resume->resumed && resume->step == config_.max_iters()) {
      summary_.nothing_to_train = true;
      return absl::OkStatus();
    }
    checkpointer_ = std::make_unique<TrainingCheckpointer>(config_, gpt_->num_params(), &comm_,
                                                           &all_ranks_log_);
    if (resume->resumed) checkpointer_->NoteResumedFrom(resume->dir);
    if (rank_ == 0) {
      const std::string path = config_.out_dir() + "/metrics.jsonl";
      absl::StatusOr<MetricsLog> metrics =
          resume->resumed
              ? MetricsLog::OpenForResume(
                    path, resume->step,
                    LatestCheckpointStep(CheckpointsDirOf(config_), seams_.checkpoint_env), log_)
              : MetricsLog::Create(path, log_);
      if (!metrics.ok()) return metrics.status();
      metrics_ = std::make_unique<MetricsLog>(*std::move(metrics));
    }
    return absl::OkStatus();
  }

  // Each rank reads the checkpoint it resumes from itself (so any world
  // size resumes any checkpoint), and skips one that does not verify: a
  // read error on one host, or a file system that shows the hosts other
  // files, made ranks resume from different steps unnoticed. They then
  // trained on different parameters and moments, failed saves whose
  // directory other ranks named otherwise, and ended apart (one rank in a
  // collective the others never entered, until the timeout). Compares the
  // steps (-1: a fresh start): FailedPrecondition, the same on every rank,
  // naming each rank's step and this rank's checkpoint and what it skipped.
  absl::Status CheckRanksResumedAlike(const ResumePoint& resume) {
    if (world_ == 1) return absl::OkStatus();
    int64_t mine = resume.resumed ? resume.step : -1;
    std::vector<int64_t> all(world_);
    if (absl::Status s =
            comm_.AllGather(HostBuffer(&mine, 1), HostBuffer(all.data(), world_), CommOptions())
                ->Wait();
        !s.ok()) {
      return s;
    }
    if (std::all_of(all.begin(), all.end(), [&](int64_t step) { return step == all[0]; })) {
      return absl::OkStatus();
    }
    std::vector<std::string> steps;
    for (int r = 0; r < world_; ++r) {
      steps.push_back(all[r] < 0 ? absl::StrCat("rank ", r, " started fresh")
                                 : absl::StrCat("rank ", r, " at step ", all[r]));
    }
    const std::string here = resume.resumed ? absl::StrCat("this rank resumed from ", resume.dir)
                                            : std::string("this rank found no checkpoint");
    const std::string skipped =
        resume.skipped.empty()
            ? ""
            : absl::StrCat(" after skipping ", absl::StrJoin(resume.skipped, "; "));
    return absl::FailedPreconditionError(absl::StrCat(
        "--resume=", config_.resume(), ": the ranks resumed from different checkpoints (",
        absl::StrJoin(steps, ", "), "); ", here, skipped,
        ". Each rank reads the checkpoint itself: one that a rank cannot read (a read error on "
        "its host, a file system that shows the hosts different files) is skipped there alone. "
        "Check the checkpoint_dir on every host (dropk ckpt verify), or resume from one that "
        "every rank reads alike (--resume=PATH)"));
  }

  absl::Status SaveCheckpoint(int64_t steps_done) {
    return checkpointer_->Save(config_, data_->tokenizer.proto(), IdentityOf(*data_), *gpt_,
                               *optimizer_, steps_done, tokens_per_step_ * steps_done,
                               summary_.last_train_loss, RankLog());
  }

  // SIGTERM/SIGINT may reach ranks at different steps (or only some ranks):
  // every rank stops after the same step if any rank was asked to.
  absl::StatusOr<bool> StopRequestedOnAnyRank() {
    int64_t stop = StopRequested() ? 1 : 0;
    if (world_ == 1) return stop != 0;
    if (absl::Status s =
            comm_.AllReduce(HostBuffer(&stop, 1), ReduceOp::kMax, CommOptions())->Wait();
        !s.ok()) {
      return s;
    }
    return stop != 0;
  }

  // Where this rank's log lines go: the log on rank 0, nowhere elsewhere.
  std::ostream& RankLog() { return rank_ == 0 ? log_ : null_log_; }

  // The collective timeout now (CommTimeout: configured, or following the
  // slowest step so far).
  CollectiveOptions CommOptions() const {
    CollectiveOptions options;
    options.timeout = CommTimeout(config_.comm_timeout_s(), slowest_step_s_);
    return options;
  }

  // Forward and backward over this rank's micro-batches, gradient average
  // over ranks, clipping, AdamW. Returns this rank's mean loss.
  // Trains step `step`: every micro-batch, the gradient average, the update.
  // Empty, with nothing updated, when a stop signal reached any rank between
  // micro-batches: with gradient accumulation a step can outlast a
  // preemption's grace period, which belongs to the save.
  absl::StatusOr<std::optional<float>> TrainStep(int64_t step, float lr) {
    kernels_->FitThreadsToLoad();  // fewer threads while another process holds cores
    const Clock::time_point step_start = Clock::now();
    if (profiler_ != nullptr) profiler_->set_paused(false);
    const int B = config_.batch_size(), T = config_.block_size();
    const int accum = config_.gradient_accumulation_steps();
    gpt_->ZeroGrad();
    double loss_sum = 0.0;
    const GradsReadyFn on_ready = [this](size_t begin, size_t end, DeviceEvent* ready) {
      bucketer_->OnGradsReady(begin, end, ready);
    };
    for (int micro = 0; micro < accum; ++micro) {
      if (micro > 0) {  // one small collective per micro-batch, only with accumulation
        absl::StatusOr<bool> stop = StopRequestedOnAnyRank();
        if (!stop.ok()) return stop.status();
        if (*stop) {
          if (profiler_ != nullptr) profiler_->set_paused(true);
          return std::optional<float>();
        }
      }
      train_batches_->Fill(step, FirstSampleOf(micro, rank_, world_, B), B, inputs_.data(),
                           targets_.data());
      const DropoutPlan plan = DropoutPlanFor(config_, step, micro, rank_, world_);
      loss_sum += gpt_->Forward(inputs_.data(), targets_.data(), B, T, &plan);
      // Only the last micro-batch communicates: earlier ones only accumulate.
      const bool last = micro == accum - 1;
      gpt_->Backward(1.0f / accum, last && world_ > 1 ? on_ready : GradsReadyFn());
    }
    if (world_ > 1) {
      if (absl::Status s = bucketer_->Wait(); !s.ok()) return s;
      window_comm_.exposed_s += bucketer_->last_timing().exposed_s;
      window_comm_.comm_s += bucketer_->last_timing().comm_s;
    }
    // The averaged gradients are bitwise equal on every rank, so is the norm.
    const double norm = std::sqrt(kernels_->SumSquares(gpt_->grads(), gpt_->num_params()));
    optimizer_->Step(lr, ClipScale(norm, config_.grad_clip()));
    const double seconds = SecondsSince(step_start);
    if (profiler_ != nullptr) profiler_->set_paused(true);
    if (seconds > slowest_step_s_) {
      slowest_step_s_ = seconds;
      bucketer_->set_options(CommOptions());
    }
    train_seconds_ += seconds;
    window_seconds_ += seconds;
    window_tokens_ += tokens_per_step_;
    return std::optional<float>(static_cast<float>(loss_sum / accum));
  }

  // Mean loss without dropout over eval_iters fixed held-out global batches
  // of batch_size x ranks samples, each rank taking its slice of each: the
  // samples evaluated depend on the product, not on how it is split, so one
  // rank x 12 and two ranks x 6 report the same figure. Empty when a stop
  // signal reached any rank during it: an evaluation of a large model can
  // outlast a preemption's grace period, which belongs to the save.
  absl::StatusOr<std::optional<float>> Evaluate(const BatchLoader& loader) {
    const int B = config_.batch_size();
    // {sum of losses, ranks that stopped early}: one collective either way,
    // so ranks that saw the signal and ranks that did not still pair up.
    double sums[2] = {0.0, 0.0};
    for (int i = 0; i < config_.eval_iters(); ++i) {
      if (StopRequested()) {
        sums[1] = 1.0;
        break;
      }
      loader.Fill(/*step=*/i, /*first_sample=*/static_cast<uint64_t>(rank_) * B, B, inputs_.data(),
                  targets_.data());
      sums[0] += gpt_->Forward(inputs_.data(), targets_.data(), B, loader.block_size(), nullptr);
    }
    if (world_ > 1) {
      if (absl::Status s =
              comm_.AllReduce(HostBuffer(sums, 2), ReduceOp::kSum, CommOptions())->Wait();
          !s.ok()) {
        return s;
      }
    }
    if (sums[1] > 0) return std::nullopt;
    return static_cast<float>(sums[0] / (static_cast<double>(config_.eval_iters()) * world_));
  }

  // A stop signal during the evaluation before step `step`: saves the
  // `step` steps trained so far (unless nothing was trained since the start
  // or resume, whose checkpoint exists) and ends the loop like a stop
  // after a step.
  // A stop signal between the micro-batches of step `step`: the step is
  // dropped (the parameters are those after `step` steps) and they are saved.
  absl::Status StopDuringStep(int64_t step) {
    RankLog() << "stop signal during step " << step << ": its micro-batches abandoned" << std::endl;
    summary_.stopped_by_signal = true;
    if (step == first_step_) return absl::OkStatus();  // nothing trained since the start
    return SaveCheckpoint(step);
  }

  absl::Status StopDuringEvaluation(int64_t step) {
    RankLog() << "stop signal during the evaluation at step " << step << ": evaluation abandoned"
              << std::endl;
    summary_.stopped_by_signal = true;
    if (step == first_step_) return absl::OkStatus();
    return SaveCheckpoint(step);
  }

  absl::StatusOr<float> MeanOverRanks(float value) {
    if (world_ == 1) return value;
    double v = value;
    if (absl::Status s =
            comm_.AllReduce(HostBuffer(&v, 1), ReduceOp::kAverage, CommOptions())->Wait();
        !s.ok()) {
      return s;
    }
    return static_cast<float>(v);
  }

  // Digests the parameters, read to the host through the kernels (they are
  // device memory), and compares the digests across ranks.
  absl::Status CheckParametersAgree(int64_t step) {
    host_params_.resize(gpt_->num_params());
    kernels_->CopyToHost(host_params_.data(), gpt_->params(), gpt_->num_params() * sizeof(float));
    const uint64_t digest = Digest(host_params_.data(), host_params_.size() * sizeof(float));
    return CheckSameOnAllRanks(&comm_, digest, "parameters", step, CommOptions());
  }

  absl::Status Report(MetricsRow& row, int64_t window_tokens, double window_seconds) {
    if (rank_ != 0) return absl::OkStatus();
    row.elapsed_s = SecondsSince(start_);
    row.tokens_per_s = window_seconds > 0 ? window_tokens / window_seconds
                       : train_seconds_ > 0
                           ? tokens_per_step_ * (summary_.steps - first_step_) / train_seconds_
                           : 0;
    const int64_t done = summary_.steps - first_step_;
    row.eta_s = done > 0 ? train_seconds_ / done * (config_.max_iters() - summary_.steps) : 0;
    std::string line = ProgressLine(row, config_.max_iters());
    if (world_ > 1 && window_seconds > 0) {
      const double steps = static_cast<double>(window_tokens) / tokens_per_step_;
      const double hidden = window_comm_.comm_s > 0
                                ? 1.0 - std::min(1.0, window_comm_.exposed_s / window_comm_.comm_s)
                                : 1.0;
      absl::StrAppendFormat(&line, " | comm %.1f ms/step, %.0f%% hidden",
                            1e3 * window_comm_.comm_s / steps, 100.0 * hidden);
    }
    log_ << line << "\n" << std::flush;
    // metrics.jsonl is a record, not the run: a full disk under it warns once
    // and training goes on (stopping here lost every step since the last
    // save, and only rank 0 writes it: the peers would wait at the next
    // collective). The log has no rows from the failed one on.
    if (absl::Status s = metrics_->Append(row); !s.ok() && !metrics_failed_) {
      metrics_failed_ = true;
      log_ << "dropk-train: " << s.message() << "; training goes on, and " << config_.out_dir()
           << "/metrics.jsonl has no rows from step " << row.step
           << " on; checkpoints are unaffected\n"
           << std::flush;
    }
    return absl::OkStatus();
  }

  absl::Status Sample() {
    SamplingOptions sampling;
    sampling.temperature = config_.sample_temperature();
    sampling.top_k = config_.sample_top_k();
    sampling.seed = config_.seed();
    // The run is over and its last checkpoint committed: a SIGTERM or SIGINT
    // now ends the sample (which the handler would otherwise only note).
    absl::StatusOr<std::vector<int32_t>> ids =
        Generate(*gpt_, prompt_, config_.sample_tokens(), sampling, StopRequested);
    if (!ids.ok()) return ids.status();
    if (StopRequested()) {
      summary_.stopped_by_signal = true;
      return absl::OkStatus();
    }
    summary_.sample = config_.sample_prompt() + data_->tokenizer.Decode(*ids);
    return absl::OkStatus();
  }

  const TrainConfig& config_;
  const TrainingSeams& seams_;
  Communicator& comm_;
  std::ostream& log_;
  OstreamLogSink all_ranks_log_;  // log_ on every rank: a rank's own failures
  const int rank_, world_;
  bool diverged_ = false;        // a training loss was not finite
  bool metrics_failed_ = false;  // a metrics.jsonl write failed (warned once)
  std::unique_ptr<TrainingData> data_;
  std::unique_ptr<MetricsLog> metrics_;  // rank 0 only
  std::vector<RunDirectoryLock> run_locks_;  // rank 0 only: out_dir, checkpoint_dir
  std::unique_ptr<Kernels> kernels_;
  ProfiledKernels* profiler_ = nullptr;  // kernels_ itself when config.profile, else null
  MemoryKind device_memory_ = {};        // of kernels_' allocations, for collectives
  std::vector<float> host_params_;       // staging for the parameter digest
  std::unique_ptr<Gpt> gpt_;
  std::unique_ptr<AdamWOptimizer> optimizer_;
  std::unique_ptr<BatchLoader> train_batches_, eval_train_batches_, eval_val_batches_;
  std::unique_ptr<GradientBucketer> bucketer_;
  std::unique_ptr<TrainingCheckpointer> checkpointer_;
  int64_t first_step_ = 0;  // 0, or the step a resumed checkpoint ends at
  std::ostream null_log_{nullptr};
  std::vector<int32_t> inputs_, targets_, prompt_;
  int64_t tokens_per_step_ = 0;
  Clock::time_point start_;
  double train_seconds_ = 0;   // training steps only, not evaluation
  double slowest_step_s_ = 0;  // the longest training step so far (for CommTimeout)
  double window_seconds_ = 0;  // since the last report
  int64_t window_tokens_ = 0;
  SyncTiming window_comm_;
  TrainSummary summary_;
};

}  // namespace

int ThreadsPerRank(int num_threads, int local_ranks) {
  if (num_threads > 0) return num_threads;
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  return std::max(1, cores / std::max(1, local_ranks));
}

namespace {

// A data file that is not there is usually a data set not prepared yet, or
// a data_dir (relative to the current directory) read from elsewhere: the
// message names the field and how to make the data.
absl::Status NameDataDirIfMissing(const std::string& data_dir, const absl::Status& status) {
  if (!absl::IsNotFound(status)) return status;
  return absl::NotFoundError(absl::StrCat("data_dir=", data_dir, ": ", status.message(),
                                          "; prepare it with `dropk data prepare --tokenizer "
                                          "char|byte|gpt2 --out ",
                                          data_dir, " TEXT...`"));
}

// A collective that timed out (DeadlineExceeded: every peer answers, so no
// host is lost) under a configured comm_timeout_s says that the setting
// set the limit: the message blamed only a stuck rank, while a rank that
// is merely slower (a long evaluation, a slow disk, a large data set's
// checksum pass) outlasts a comm_timeout_s set too low just the same.
absl::StatusOr<TrainSummary> NameConfiguredCommTimeout(const TrainConfig& config,
                                                       absl::StatusOr<TrainSummary> summary) {
  if (summary.ok() || !absl::IsDeadlineExceeded(summary.status()) || config.comm_timeout_s() <= 0) {
    return summary;
  }
  // Its payloads (marks a caller may test for) are kept.
  return WithMessage(summary.status(),
                     absl::StrCat(summary.status().message(),
                                  "; that limit is comm_timeout_s=", config.comm_timeout_s(),
                                  ": raise it, or set 0 (auto), if a rank is only slower"));
}

}  // namespace

absl::StatusOr<TrainingData> LoadTrainingData(const std::string& data_dir) {
  // A file given as data_dir (the corpus itself, say) is a usage error.
  if (Env::Default()->FileExists(data_dir) && !Env::Default()->IsDirectory(data_dir)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data_dir=", data_dir,
        ": not a directory; data_dir names the directory `dropk data prepare --out DIR` wrote "
        "(tokenizer.pb, train.bin, val.bin), not a text file"));
  }
  PreparedDataRecord record;
  record.tokenizer_path = data_dir + "/tokenizer.pb";
  const std::string& tokenizer_path = record.tokenizer_path;
  absl::StatusOr<TextTokenizer> tokenizer =
      LoadTokenizer(tokenizer_path, Env::Default(), &record.dataset_id, &record.file_checksums);
  if (!tokenizer.ok()) return NameDataDirIfMissing(data_dir, tokenizer.status());
  absl::StatusOr<TokenDataset> train = TokenDataset::Open(data_dir, "train");
  if (!train.ok()) return NameDataDirIfMissing(data_dir, train.status());
  absl::StatusOr<TokenDataset> val = TokenDataset::Open(data_dir, "val");
  if (!val.ok()) return NameDataDirIfMissing(data_dir, val.status());
  // A preparation interrupted between its renames, or files copied in by
  // hand, mix two data sets; with the same vocabulary size nothing else
  // would notice.
  for (const TokenDataset* f : {&*train, &*val}) {
    if (f->dataset_id() != record.dataset_id) {
      return MixedPreparationsError(f->files().front().path(), f->dataset_id(), tokenizer_path,
                                    record.dataset_id);
    }
  }
  for (const TokenDataset* f : {&*train, &*val}) {
    if (f->vocab_size() != tokenizer->vocab_size()) {
      return absl::FailedPreconditionError(absl::StrCat(
          f->name(), ": vocab_size ", f->vocab_size(), " differs from ", tokenizer_path, "'s ",
          tokenizer->vocab_size(), "; prepare the data again with `dropk data prepare`"));
    }
  }
  // Last, as the only check that reads every byte. Each rank checks the
  // files it reads itself (hosts may hold copies of their own); one that
  // finds a mismatch ends the job (dropk-train's FailRank), so no rank is
  // left waiting in the collective after this.
  uint32_t tokens_crc = 0;
  if (absl::Status s = VerifyPreparedData(record, *tokenizer, *train, *val, &tokens_crc); !s.ok()) {
    return s;
  }
  return TrainingData{std::move(*tokenizer), std::move(*train), std::move(*val), tokens_crc};
}

absl::Status DeviceFailureStatus(const DeviceError& error) {
  return absl::InternalError(
      absl::StrCat("the GPU failed: ", error.what(),
                   "; checkpoints saved so far are intact, resume with --resume=latest"));
}

absl::StatusOr<TrainSummary> RunTraining(const TrainConfig& config, Communicator& comm,
                                         std::ostream& log, const TrainingSeams& seams) {
  // A DeviceError leaves the loop from the failing op: nothing between it
  // and RunUnlessDeviceFails catches it, and nothing saves. The run's
  // destruction then joins the background checkpoint writer (file I/O
  // only), releases the run-directory locks and frees device memory best
  // effort (Free never throws); none of it waits on another rank.
  TrainingRun run(config, comm, log, seams);
  absl::StatusOr<TrainSummary> summary = run.RunUnlessDeviceFails();
  return NameConfiguredCommTimeout(config, std::move(summary));
}

}  // namespace dropk
