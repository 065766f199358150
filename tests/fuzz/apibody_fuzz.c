/*
 * apibody_fuzz — libFuzzer target for the HTTP API body parser
 * (codec_decode_credentials). Any input decodes or fails cleanly; on
 * success the user name is valid and the strings are within their bounds.
 * Run with tools/fuzz apibody SECONDS.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct credentials c;
    char msg[160];

    if (codec_decode_credentials((const char *)data, size, &c, msg, sizeof(msg)) == ERR_NONE) {
        if (!codec_valid_user(c.user) || !c.password || strlen(c.password) > 1024 ||
            (c.email && strlen(c.email) > 254))
            abort();
        credentials_release(&c);
    } else if (c.password || c.email) {
        abort(); /* a failed decode owns nothing */
    }
    return 0;
}
