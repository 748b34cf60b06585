/* libFuzzer target: the distribution handshake and the frames after it.
 * The first byte picks where the bytes arrive (a connection accepting, one
 * that dialled, one that is up; with the 2-byte handshake lengths of TCP or
 * the 4-byte ones of TLS); any input must end in the connection being
 * closed or still open, never in a crash.  See CMakeLists.txt. */
#include <stddef.h>
#include <stdint.h>

#include "dist/dist_internal.h"

/* libFuzzer's entry point. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int ready;
  if (!ready) {
    mb_log_set_level(MB_LOG_ERROR + 1);
    mb_config_t cfg = {0};
    cfg.schedulers = 1;
    mb_node_start(&cfg);
    mb__dist_fuzz_init("fuzz@localhost", "cookie");
    ready = 1;
  }
  mb__dist_fuzz_feed(data, size);
  return 0;
}
