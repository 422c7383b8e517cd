#ifndef C_FUZZER_H
#define C_FUZZER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver, in the runtime that `-sanitize=fuzzer` links: runs `callback` on the
/// inputs and with the options of the command line. A target's own `main` calls it (SwiftPM
/// gives every executable a `main`, so libFuzzer's cannot be the one).
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
