// Checksums of prepared data: what `dropk data prepare` records in
// tokenizer.pb about the token files it writes, and the check that the
// files the trainer is about to read are still those bytes. The other
// checks of a token file (magic, sizes, every token < vocab_size) pass a
// file in which a token became another valid token id; only a checksum
// sees that.
//
// Two records, by age of the preparation:
//   - token_files (tokenizer.proto): the CRC32C of each whole file, by name.
//     A mismatch names the file.
//   - dataset_id only (data prepared before token_files): a CRC32C over all
//     tokens, train then val, and what else decided the files (DatasetId).
//     A mismatch can say only that some token file changed.
// Data prepared before dataset ids (id 0) records nothing to check against.
#ifndef DROPK_TRAINER_DATA_CHECKSUMS_H_
#define DROPK_TRAINER_DATA_CHECKSUMS_H_

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "model/tokenizer.h"
#include "trainer/token_dataset.h"

namespace dropk {

// The dataset id of a preparation: the CRC32C of its tokens as stored (train
// then val, token_width bytes each) `tokens_crc`, extended over
// `tokenizer_bytes` (tokenizer.pb without dataset_id and token_files), then
// the train token count and the --shard-tokens of the preparation, each as
// 8 little-endian bytes; never 0 (a CRC of 0 becomes 1).
uint32_t DatasetId(uint32_t tokens_crc, const std::string& tokenizer_bytes, uint64_t n_train,
                   uint64_t shard_tokens);

// What data_dir's tokenizer.pb records of the preparation that wrote it.
struct PreparedDataRecord {
  std::string tokenizer_path;                      // for messages
  uint32_t dataset_id = 0;                         // 0: recorded nothing
  std::map<std::string, uint32_t> file_checksums;  // file name -> CRC32C; empty in older data
};

// Checks `train` and `val`, read from one data directory whose tokenizer.pb
// (holding `tokenizer`) recorded `record`, against that record: every file's
// CRC32C against token_files, and token_files naming exactly the files
// read (a shard deleted or added by hand); or, without token_files, all
// tokens against the dataset id. InvalidArgument on a mismatch, one line
// naming the file (or, with only a dataset id, the data directory) and
// saying that `dropk data prepare` writes it anew. OK when the record holds
// nothing to check. Sets *tokens_crc to TokensCrc(train, val), computed in
// the same pass (0 on an error). Reads every byte of every file once
// (CRC32C at several GB/s: the cost is reading the data); blocks; touches
// nothing shared.
absl::Status VerifyPreparedData(const PreparedDataRecord& record, const TextTokenizer& tokenizer,
                                const TokenDataset& train, const TokenDataset& val,
                                uint32_t* tokens_crc);

// The CRC32C of all tokens as stored (token_width bytes each), train then
// val: what the data holds, whichever files it is split into (a
// preparation's --shard-tokens) and whichever preparation wrote it (its
// dataset id). Reads every token once.
uint32_t TokensCrc(const TokenDataset& train, const TokenDataset& val);

}  // namespace dropk

#endif  // DROPK_TRAINER_DATA_CHECKSUMS_H_
