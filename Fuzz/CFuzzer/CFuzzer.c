// Only the header: LLVMFuzzerRunDriver is in libFuzzer.
