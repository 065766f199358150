/* tls — see tls.h. Only this file includes OpenSSL's SSL headers. */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "refcount.h"
#include "util.h"

/* Forward secrecy and AEAD only. */
const char tls_cipher_list[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                               "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                               "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

struct tls_creds {
    _Atomic unsigned refs;
    X509 *leaf;
    STACK_OF(X509) *chain;
    EVP_PKEY *key;
};

static void ssl_error(char *err, size_t errsz, const char *what, const char *path)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errsz, "%s '%s': %s", what, path, e ? buf : "no PEM data");
    ERR_clear_error();
}

struct tls_creds *tls_creds_load(const char *cert, const char *key, char *err, size_t errsz)
{
    struct tls_creds *c = xcalloc(1, sizeof(*c));
    FILE *f = NULL;
    X509 *x;

    ref_init(&c->refs, 1);
    c->chain = sk_X509_new_null();
    if (!(f = fopen(cert, "r"))) {
        snprintf(err, errsz, "cannot open certificate '%s'", cert);
        goto fail;
    }
    if (!(c->leaf = PEM_read_X509(f, NULL, NULL, NULL))) {
        ssl_error(err, errsz, "cannot read certificate", cert);
        goto fail;
    }
    while ((x = PEM_read_X509(f, NULL, NULL, NULL)))
        sk_X509_push(c->chain, x);
    ERR_clear_error(); /* the end of the file reads as an error */
    fclose(f);
    if (!(f = fopen(key, "r"))) {
        snprintf(err, errsz, "cannot open private key '%s'", key);
        goto fail;
    }
    if (!(c->key = PEM_read_PrivateKey(f, NULL, NULL, NULL))) {
        ssl_error(err, errsz, "cannot read private key", key);
        goto fail;
    }
    fclose(f);
    f = NULL;
    if (X509_check_private_key(c->leaf, c->key) != 1) {
        snprintf(err, errsz, "private key '%s' does not match certificate '%s'", key, cert);
        ERR_clear_error();
        goto fail;
    }
    return c;
fail:
    if (f)
        fclose(f);
    tls_creds_unref(&c);
    return NULL;
}

struct tls_creds *tls_creds_ref(struct tls_creds *c)
{
    ref_get(&c->refs);
    return c;
}

void tls_creds_unref(struct tls_creds **cp)
{
    struct tls_creds *c = *cp;
    if (!c)
        return;
    *cp = NULL;
    if (!ref_put(&c->refs, "tls_creds"))
        return;
    X509_free(c->leaf);
    sk_X509_pop_free(c->chain, X509_free);
    EVP_PKEY_free(c->key);
    free(c);
}

void tls_harden(void *ssl_ctx)
{
    SSL_CTX *ctx = ssl_ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_cipher_list(ctx, tls_cipher_list);
}

int tls_apply(void *ssl_ctx, const struct tls_creds *c)
{
    /* override=1: replace what the context had; live SSL objects keep their
     * own references to the old certificate */
    if (SSL_CTX_use_cert_and_key(ssl_ctx, c->leaf, c->key, c->chain, 1) != 1) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}
