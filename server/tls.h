/*
 * tls — the OpenSSL side of https:// and wss://: hardening each loop's
 * server SSL_CTX (TLS 1.2 minimum, modern ciphers) and reloading the
 * certificate on SIGHUP without touching live connections. The files are
 * read and parsed on the main thread; a loop only swaps the parsed
 * certificate into its own SSL_CTX, so no loop waits on the disk.
 */
#ifndef PARLEY_TLS_H
#define PARLEY_TLS_H

#include <stddef.h>

struct tls_creds;

/* Thread: main. Read and check a PEM chain and key (they must match).
 * NULL with a message in err. */
struct tls_creds *tls_creds_load(const char *cert, const char *key, char *err, size_t errsz);
/* Thread: any. Reference counting: one per loop the creds are posted to. */
struct tls_creds *tls_creds_ref(struct tls_creds *c);
void tls_creds_unref(struct tls_creds **cp);

/* Thread: the loop owning ctx (an SSL_CTX *). Minimum TLS 1.2, server
 * cipher preference, no renegotiation, no compression. */
void tls_harden(void *ssl_ctx);
/* Thread: the loop owning ctx. New handshakes use creds from now on.
 * Returns 0 or -1. */
int tls_apply(void *ssl_ctx, const struct tls_creds *c);

/* The cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's defaults). */
extern const char tls_cipher_list[];

#endif
