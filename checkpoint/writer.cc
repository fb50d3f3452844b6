#include "checkpoint/writer.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/crc32c.h"
#include "checkpoint/format.h"
#include "comm/peer_lost.h"
#include "errors.h"
#include "model/param_layout.h"

namespace dropk {
namespace {

using namespace checkpoint_internal;  // NOLINT: the library's own private helpers

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Waits on a collective and turns its failure into a status naming `what`
// (a lost peer stays one, comm/peer_lost.h).
absl::Status WaitFor(std::unique_ptr<Work> work, const char* what) {
  return WithContext(work->Wait(), absl::StrCat("checkpoint ", what));
}

// `failure`, met by a save, with `context` before its message. A save fails
// mid-run, after the command was checked: a directory that vanished (ENOENT,
// NotFound) or a path that became unusable is a failure of the run
// (FailedPrecondition, exit 1), not a usage error (exit 2,
// base/exit_codes.h) as the OS's code would make it.
absl::Status SaveFailure(const absl::Status& failure, const std::string& context) {
  const bool reads_as_usage = absl::IsNotFound(failure) || absl::IsInvalidArgument(failure);
  return WithContext(failure, context,
                     reads_as_usage ? absl::StatusCode::kFailedPrecondition : failure.code());
}

std::string TmpDirName(const std::string& final_name, int64_t nonce) {
  return absl::StrFormat("%s.tmp-%08x", final_name, nonce);
}

// The manifest's header fields (everything but the entries).
CheckpointManifest ManifestHeader(const CheckpointState& state, int world) {
  CheckpointManifest manifest;
  manifest.set_step(state.step);
  manifest.set_tokens_seen(state.tokens_seen);
  *manifest.mutable_config() = *state.config;
  *manifest.mutable_tokenizer() = *state.tokenizer;
  if (state.data != nullptr) *manifest.mutable_data() = *state.data;
  manifest.set_data_step(state.step);
  manifest.set_schedule_step(state.step);
  manifest.set_dropout_step(state.step);
  manifest.set_world_size(world);
  manifest.set_optimizer_step(state.optimizer_step);
  manifest.set_last_train_loss(state.last_train_loss);
  manifest.set_num_params(static_cast<int64_t>(state.num_params));
  manifest.set_created_unix_ms(NowUnixMs());
  return manifest;
}

// Every rank's slices of m and v, two per rank, offsets fixed: m then v in
// each rank's file. Rank 0 writes these into the manifest for every rank, so
// they are fixed here, not by the writer of each file.
std::vector<TensorEntry> OptimizerSlices(size_t num_params, int world) {
  std::vector<TensorEntry> slices(2 * world);
  for (int r = 0; r < world; ++r) {
    const auto [begin, end] = OptimizerSlice(num_params, r, world);
    for (int k = 0; k < 2; ++k) {
      TensorEntry& e = slices[2 * r + k];
      e.set_name(k == 0 ? kAdamMName : kAdamVName);
      e.set_dtype(FLOAT32);
      e.add_shape(static_cast<int64_t>(end - begin));
      e.set_file(OptimizerDataFileName(r, world));
      e.set_length((end - begin) * kFloatBytes);
      e.set_offset(k == 0 ? 0 : (end - begin) * kFloatBytes);
      e.set_slice_start(begin);
    }
  }
  return slices;
}

// Pins every data file's size (format version 2): the end of its last entry.
void ListDataFiles(CheckpointManifest& manifest) {
  std::map<std::string, uint64_t> sizes;
  for (const TensorEntry& e : manifest.tensors()) {
    uint64_t& size = sizes[e.file()];
    size = std::max<uint64_t>(size, e.offset() + e.length());
  }
  for (const auto& [name, size] : sizes) {
    DataFileInfo* f = manifest.add_data_files();
    f->set_name(name);
    f->set_size(size);
  }
}

}  // namespace

CheckpointWriter::CheckpointWriter(CheckpointWriterOptions options, Communicator* comm)
    : options_(std::move(options)),
      peer_timeout_(options_.collective_timeout),
      comm_(comm),
      env_(options_.env != nullptr ? options_.env : Env::Default()),
      log_(OrDiscard(options_.log)),
      buffer_(MakeBuffer(options_.buffer_bytes)) {}

absl::StatusOr<std::string> CheckpointWriter::Save(const CheckpointState& state) {
  absl::StatusOr<SaveInProgress> save = Stage(state);
  if (!save.ok()) return save.status();
  const auto [begin, end] = OptimizerSlice(state.num_params, comm_->Rank(), comm_->Size());
  const WriteSources sources{state.kernels, state.params, state.adam_m + begin,
                             state.adam_v + begin};
  const absl::Status local = Write(sources, *save);
  if (!local.ok())
    log_->Write(absl::StrCat("dropk checkpoint: rank ", comm_->Rank(), ": ", local.message()));
  absl::StatusOr<std::string> committed = Commit(local, *save);
  if (!committed.ok()) return committed;
  if (comm_->Rank() == 0) RetainAfterCommit(state.step);
  return committed;
}

void CheckpointWriter::RetainAfterCommit(int64_t newest_step) {
  last_committed_step_.store(newest_step);
  if (absl::Status s = ApplyRetention(newest_step); !s.ok()) {
    // The new checkpoint is committed; failing to delete old ones is not
    // worth stopping training for.
    log_->Write(absl::StrCat("dropk checkpoint: retention: ", s.message()));
  }
}

void CheckpointWriter::NoteResumedFrom(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path checkpoint = fs::path(dir).lexically_normal();
  if (!checkpoint.has_filename()) checkpoint = checkpoint.parent_path();  // "step-N/"
  const fs::path parent = checkpoint.has_parent_path() ? checkpoint.parent_path() : ".";
  // Equivalent, not equal: --resume=PATH may name it by another path.
  if (!fs::equivalent(parent, options_.checkpoints_dir, ec) || ec) {
    return;  // another run's checkpoint: not this writer's to watch
  }
  resumed_from_ = checkpoint.filename().string();
}

void CheckpointWriter::WarnIfLastCommittedIsGone(int64_t step) {
  const int64_t committed = last_committed_step_.load();
  if (committed < 0 && resumed_from_.empty()) return;
  const std::string& root = options_.checkpoints_dir;
  const std::string name = committed >= 0 ? CheckpointDirName(committed) : resumed_from_;
  if (env_->IsDirectory(PathJoin(root, name))) return;
  // Only now, so a save costs one stat: was the whole directory deleted?
  const std::string what =
      env_->IsDirectory(root) ? "is gone" : "is gone, with checkpoint_dir itself";
  log_->Write(
      absl::StrCat("dropk checkpoint: warning: checkpoint_dir ", root, ": ", name,
                   committed >= 0 ? ", committed by this run, " : ", which this run resumed from, ",
                   what, " (deleted from outside?); saving ", CheckpointDirName(step), " anyway"));
}

absl::StatusOr<CheckpointWriter::SaveInProgress> CheckpointWriter::Stage(
    const CheckpointState& state) {
  const int rank = comm_->Rank(), world = comm_->Size();
  const std::string& root = options_.checkpoints_dir;
  const std::string final_name = CheckpointDirName(state.step);

  absl::StatusOr<GptConfig> shape = ShapeOf(*state.config, *state.tokenizer);
  if (!shape.ok()) return shape.status();
  const ParamLayout layout(*shape);
  if (layout.num_params() != state.num_params) {
    return absl::InternalError(absl::StrCat("checkpoint: the model has ", state.num_params,
                                            " parameters, its config describes ",
                                            layout.num_params()));
  }

  // Rank 0 names the temporary directory and creates it; every rank learns
  // both the name and whether that worked.
  int64_t header[2] = {0, 0};  // nonce, failed
  absl::Status created;
  if (rank == 0) {
    header[0] = static_cast<int64_t>(std::random_device{}() & 0x7FFFFFFF);
    WarnIfLastCommittedIsGone(state.step);
    created = env_->CreateDir(root);
    if (created.ok()) created = env_->CreateDir(PathJoin(root, TmpDirName(final_name, header[0])));
    if (!created.ok()) {
      header[1] = 1;
      log_->Write(absl::StrCat("dropk checkpoint: ", created.message()));
    }
  }
  if (absl::Status s =
          WaitFor(comm_->Broadcast(HostBuffer(header, 2), 0, PeerTimeout()), "broadcast");
      !s.ok()) {
    return s;
  }
  SaveInProgress save;
  save.step = state.step;
  save.tmp = PathJoin(root, TmpDirName(final_name, header[0]));
  save.final_dir = PathJoin(root, final_name);
  if (header[1] != 0) {
    // Rank 0 names the cause; the others know only that it failed.
    const std::string context = absl::StrCat("checkpoint: cannot create ", save.tmp);
    if (rank == 0) return SaveFailure(created, context);
    return absl::AbortedError(absl::StrCat(context, " (rank 0 could not; its line says why)"));
  }

  save.manifest = ManifestHeader(state, world);
  if (rank == 0) {  // model parameters: one entry per tensor, all in model.data
    for (const ParamTensor& t : layout.tensors()) {
      TensorEntry* e = save.manifest.add_tensors();
      e->set_name(kModelTensorPrefix + t.name);
      e->set_dtype(FLOAT32);
      for (int64_t d : t.shape) e->add_shape(d);
      e->set_file(kModelDataFileName);
      e->set_length(t.numel * kFloatBytes);
      save.model_offsets.push_back(t.offset);
    }
  }
  save.slices = OptimizerSlices(state.num_params, world);
  return save;
}

absl::Status CheckpointWriter::Write(const WriteSources& sources, SaveInProgress& save) {
  const int rank = comm_->Rank(), world = comm_->Size();
  if (rank == 0) {
    std::vector<TensorEntry*> entries;
    std::vector<const float*> from;
    for (int i = 0; i < save.manifest.tensors_size(); ++i) {
      entries.push_back(save.manifest.mutable_tensors(i));
      from.push_back(sources.params + save.model_offsets[i]);
    }
    if (absl::Status s =
            WriteRun(PathJoin(save.tmp, kModelDataFileName), entries, from, sources.kernels);
        !s.ok()) {
      return s;
    }
  }
  return WriteRun(PathJoin(save.tmp, OptimizerDataFileName(rank, world)),
                  {&save.slices[2 * rank], &save.slices[2 * rank + 1]},
                  {sources.m_slice, sources.v_slice}, sources.kernels);
}

absl::StatusOr<std::string> CheckpointWriter::Commit(const absl::Status& local,
                                                     SaveInProgress& save) {
  const int rank = comm_->Rank(), world = comm_->Size();
  // Every rank's part is durable (fsynced) before this exchange returns;
  // the CRCs of the slices travel with it to rank 0.
  int64_t mine[3] = {local.ok() ? 0 : 1, save.slices[2 * rank].crc32c(),
                     save.slices[2 * rank + 1].crc32c()};
  std::vector<int64_t> all(3 * world);
  if (absl::Status s = WaitFor(
          comm_->AllGather(HostBuffer(mine, 3), HostBuffer(all.data(), all.size()), Timeout()),
          "allgather");
      !s.ok()) {
    return s;
  }
  int64_t failed_ranks = 0;
  std::vector<uint32_t> crcs;
  for (int r = 0; r < world; ++r) {
    failed_ranks += all[3 * r] != 0;
    crcs.push_back(static_cast<uint32_t>(all[3 * r + 1]));
    crcs.push_back(static_cast<uint32_t>(all[3 * r + 2]));
  }
  const absl::Status publish_status =
      rank == 0 ? CompleteOrDiscard(save, failed_ranks, crcs) : absl::OkStatus();
  return AgreeOnOutcome(local, failed_ranks, publish_status, save, Timeout());
}

absl::Status CheckpointWriter::CompleteOrDiscard(SaveInProgress& save, int64_t failed_ranks,
                                                 const std::vector<uint32_t>& crcs) {
  absl::Status publish_status;
  if (failed_ranks == 0) {
    for (size_t i = 0; i < save.slices.size(); ++i) {
      save.slices[i].set_crc32c(crcs[i]);
      *save.manifest.add_tensors() = save.slices[i];
    }
    ListDataFiles(save.manifest);
    publish_status = Publish(save.tmp, save.final_dir, save.manifest);
  }
  if (failed_ranks != 0 || !publish_status.ok()) {
    env_->RemoveDirRecursively(save.tmp).IgnoreError();
  }
  return publish_status;
}

absl::StatusOr<std::string> CheckpointWriter::AgreeOnOutcome(
    const absl::Status& local, int64_t failed_ranks, const absl::Status& publish_status,
    SaveInProgress& save, const CollectiveOptions& options, bool* agreed) {
  int64_t committed = comm_->Rank() == 0 && failed_ranks == 0 && publish_status.ok() ? 1 : 0;
  if (agreed != nullptr) *agreed = false;
  if (absl::Status s =
          WaitFor(comm_->Broadcast(HostBuffer(&committed, 1), 0, options), "broadcast");
      !s.ok()) {
    return s;
  }
  if (agreed != nullptr) *agreed = true;
  if (committed != 0) return save.final_dir;
  if (!local.ok()) return SaveFailure(local, absl::StrCat("checkpoint ", save.tmp));
  if (!publish_status.ok()) {
    return SaveFailure(publish_status, absl::StrCat("checkpoint ", save.final_dir));
  }
  // Another rank's failure: Aborted, never Unavailable, which a lost peer's
  // collective is (comm/peer_lost.h).
  if (failed_ranks == 0) {
    // Rank 0 alone knows why its publish failed; it names the cause.
    return absl::AbortedError(absl::StrCat("checkpoint ", save.final_dir,
                                           ": rank 0 failed to commit it; LATEST unchanged"));
  }
  return absl::AbortedError(absl::StrCat("checkpoint ", save.final_dir, ": ", failed_ranks,
                                         " rank(s) failed to write their part; LATEST unchanged"));
}

absl::Status CheckpointWriter::WriteRun(const std::string& path,
                                        const std::vector<TensorEntry*>& entries,
                                        const std::vector<const float*>& sources,
                                        Kernels* kernels) {
  absl::StatusOr<std::unique_ptr<WritableFile>> file = env_->NewWritableFile(path);
  if (!file.ok()) return file.status();
  uint64_t offset = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    TensorEntry* e = entries[i];
    const char* src = reinterpret_cast<const char*>(sources[i]);
    uint32_t crc = 0;
    for (uint64_t done = 0; done < e->length();) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buffer_.size(), e->length() - done));
      const char* chunk = src + done;
      if (kernels != nullptr && !HostAddressable(kernels)) {
        kernels->CopyToHost(buffer_.data(), src + done, n);
        chunk = buffer_.data();
      }
      // Checksum on a helper thread while this one writes the same bytes:
      // both only read the chunk, and the CRC then costs no wall time.
      std::future<uint32_t> next_crc =
          std::async(std::launch::async, [crc, chunk, n] { return crc32c::Extend(crc, chunk, n); });
      absl::Status written = (*file)->Append(chunk, n);
      crc = next_crc.get();
      if (!written.ok()) return written;
      done += n;
    }
    e->set_offset(offset);
    e->set_crc32c(crc);
    offset += e->length();
  }
  if (absl::Status s = (*file)->Sync(); !s.ok()) return s;
  return (*file)->Close();
}

absl::Status CheckpointWriter::Publish(const std::string& tmp, const std::string& final_dir,
                                       const CheckpointManifest& manifest) {
  const std::string& root = options_.checkpoints_dir;
  if (absl::Status s =
          WriteDurableFile(env_, PathJoin(tmp, kManifestFileName), SerializeManifestFile(manifest));
      !s.ok()) {
    return s;
  }
  if (absl::Status s = env_->SyncDir(tmp); !s.ok()) return s;
  // A directory of the same step left by an earlier run (one we resumed
  // before, or a corrupt one we skipped) is moved aside, then deleted. So is
  // anything else of its name, a symbolic link to nothing or a loop too:
  // FileExists follows links and reads those as missing, and the rename
  // below then failed the save ("Not a directory") after the steps since
  // the checkpoint before it had been trained.
  absl::StatusOr<std::vector<std::string>> names = env_->ListDir(root);
  if (!names.ok()) return names.status();
  std::string aside;
  if (std::find(names->begin(), names->end(), CheckpointDirName(manifest.step())) != names->end()) {
    aside = absl::StrCat(tmp, ".old");
    if (absl::Status s = env_->RenameFile(final_dir, aside); !s.ok()) return s;
  }
  if (absl::Status s = env_->RenameFile(tmp, final_dir); !s.ok()) return s;
  if (absl::Status s = env_->SyncDir(root); !s.ok()) return s;
  const std::string name = CheckpointDirName(manifest.step()) + "\n";
  if (absl::Status s = ReplaceFileAtomically(
          env_, PathJoin(root, kLatestFileName),
          [&name](WritableFile& f) { return f.Append(name.data(), name.size()); });
      !s.ok()) {
    // The checkpoint itself is whole and in place: said so, as "the save
    // failed" alone read as if the step were lost.
    return absl::Status(s.code(), absl::StrCat("saved whole, but LATEST could not be updated to "
                                               "name it (it names the checkpoint before): ",
                                               s.message()));
  }
  if (!aside.empty()) env_->RemoveDirRecursively(aside).IgnoreError();
  return absl::OkStatus();
}

absl::Status CheckpointWriter::ApplyRetention(int64_t newest_step) {
  const std::string& root = options_.checkpoints_dir;
  absl::StatusOr<std::vector<std::string>> names = env_->ListDir(root);
  if (!names.ok()) return names.status();
  std::vector<int64_t> steps;
  absl::Status first_error;
  for (const std::string& name : *names) {
    const int64_t step = ParseStepDirName(name);
    if (step >= 0) {
      // A step-N directory without a manifest is no checkpoint (a copy cut
      // short, one made by hand): counted, it took a place of keep_last,
      // and the checkpoints before it were deleted while it was kept. It is
      // neither counted nor deleted.
      if (env_->FileExists(PathJoin(PathJoin(root, name), kManifestFileName))) {
        steps.push_back(step);
      }
    } else if (name.rfind("step-", 0) == 0 && name.find(".tmp-") != std::string::npos) {
      // Left by a save that crashed; ours has been renamed already.
      if (absl::Status s = env_->RemoveDirRecursively(PathJoin(root, name));
          !s.ok() && first_error.ok()) {
        first_error = s;
      }
    }
  }
  std::sort(steps.rbegin(), steps.rend());
  // The newest checkpoint whose parameters are known good (steps is sorted
  // newest first), kept whatever keep_last says.
  const int64_t known_good = known_good_step_.load();
  int64_t known_good_kept = -1;
  for (const int64_t step : steps) {
    if (step <= known_good) {
      known_good_kept = step;
      break;
    }
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    const int64_t step = steps[i];
    const bool keep = step == newest_step || static_cast<int64_t>(i) < options_.keep_last ||
                      step == known_good_kept ||
                      (options_.keep_every > 0 && step % options_.keep_every == 0);
    if (keep) continue;
    if (absl::Status s = env_->RemoveDirRecursively(PathJoin(root, CheckpointDirName(step)));
        !s.ok() && first_error.ok()) {
      first_error = s;
    }
  }
  if (absl::Status s = env_->SyncDir(root); !s.ok() && first_error.ok()) first_error = s;
  return first_error;
}

}  // namespace dropk
