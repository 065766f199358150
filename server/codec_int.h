/*
 * codec_int — helpers private to the codec library (codec.c and textmode.c,
 * the JSON and the text-mode decoders); no other module includes this.
 * Thread: any. No state.
 */
#ifndef PARLEY_CODEC_INT_H
#define PARLEY_CODEC_INT_H

#include <stddef.h>

#include "codec.h"

/* Format the decoder's error message into msg (msgsz bytes; nothing is
 * written when msg is NULL or msgsz is 0) and return c, so a decoder can
 * write `return codec__fail(...)`. Thread: any. */
enum err_code codec__fail(char *msg, size_t msgsz, enum err_code c, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
