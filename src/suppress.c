/*
 * suppress - suppression entry encoding and normalisation (see suppress.h).
 */
#include "suppress.h"

#include "util.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const suppress_reasons[] = {
    [SUPPRESS_HARD_BOUNCE] = "hard-bounce", [SUPPRESS_COMPLAINT] = "complaint",
    [SUPPRESS_UNSUBSCRIBE] = "unsubscribe", [SUPPRESS_MANUAL] = "manual",
    [SUPPRESS_SOFT_BOUNCE] = "soft-bounce", [SUPPRESS_FORGOTTEN] = "forgotten",
};

const char *suppress_reason_str(enum SUPPRESS_REASON r)
{
    return (unsigned)r < ARRAY_LEN(suppress_reasons) ? suppress_reasons[r] : "unknown";
}

int suppress_reason_parse(const char *s, enum SUPPRESS_REASON *out)
{
    for (size_t i = 0; i < ARRAY_LEN(suppress_reasons); i++)
        if (strcasecmp(s, suppress_reasons[i]) == 0) {
            *out = (enum SUPPRESS_REASON)i;
            return 0;
        }
    return -1;
}

int suppress_normalize(const char *in, char *out, size_t n)
{
    while (*in == ' ' || *in == '\t' || *in == '<')
        in++;
    size_t len = strlen(in);
    while (len && (in[len - 1] == ' ' || in[len - 1] == '\t' || in[len - 1] == '\r' ||
                   in[len - 1] == '\n' || in[len - 1] == '>'))
        len--;
    if (len == 0 || len + 1 > n || len + 1 > SUPPRESS_ADDR_MAX) return -1;
    const char *at = memrchr(in, '@', len);
    if (!at || at == in + len - 1) return -1; /* no domain */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch <= ' ' || ch == 0x7f) return -1;
        out[i] = (char)((ch >= 'A' && ch <= 'Z') ? ch + 32 : ch);
    }
    out[len] = '\0';
    /* a domain entry is "@domain"; an address needs a local part too */
    return 0;
}

bool suppress_scope_valid(const char *scope)
{
    size_t len = strlen(scope);
    if (len == 0) return true;
    if (len >= SUPPRESS_SCOPE_MAX) return false;
    const char *v;
    if (strncmp(scope, "domain:", 7) == 0)
        v = scope + 7;
    else if (strncmp(scope, "list:", 5) == 0)
        v = scope + 5;
    else
        return false;
    if (!*v) return false;
    for (; *v; v++)
        if ((unsigned char)*v <= ' ' || *v == 0x7f) return false;
    return true;
}

void suppress_hash_target(const char *norm_addr, char out[SUPPRESS_HASH_LEN + 1])
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    static const char hex[] = "0123456789abcdef";
    SHA256((const unsigned char *)norm_addr, strlen(norm_addr), md);
    out[0] = '#';
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
        out[1 + 2 * i] = hex[md[i] >> 4];
        out[2 + 2 * i] = hex[md[i] & 15];
    }
    out[SUPPRESS_HASH_LEN] = '\0';
}

size_t suppress_key(uint8_t *buf, size_t n, const char *scope, const char *target)
{
    size_t sl = strlen(scope), tl = strlen(target);
    if (sl >= SUPPRESS_SCOPE_MAX || tl == 0 || tl >= SUPPRESS_ADDR_MAX || sl + 1 + tl > n)
        return 0;
    memcpy(buf, scope, sl);
    buf[sl] = '\0';
    memcpy(buf + sl + 1, target, tl);
    return sl + 1 + tl;
}

int suppress_key_split(const uint8_t *key, size_t len, char *scope, size_t scopen, char *target,
                       size_t targetn)
{
    const uint8_t *nul = memchr(key, '\0', len);
    if (!nul) return -1;
    size_t sl = (size_t)(nul - key), tl = len - sl - 1;
    if (sl + 1 > scopen || tl + 1 > targetn || tl == 0) return -1;
    memcpy(scope, key, sl);
    scope[sl] = '\0';
    memcpy(target, nul + 1, tl);
    target[tl] = '\0';
    return 0;
}

json_t *suppress_acct_record(const char *msgid, const char *campaign, const char *list,
                             const char *sender, const char *recipient, const char *stage,
                             const char *diag)
{
    const char *at = strrchr(recipient, '@');
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "msgid", msgid, "campaign",
                     campaign, "list", list, "sender", sender, "recipient", recipient, "domain",
                     at ? at + 1 : "", "stage", stage, "diag", diag);
}

size_t suppress_rec_encode(const struct suppress_rec *r, uint8_t *buf, size_t n)
{
    size_t sl = strnlen(r->source, sizeof r->source - 1);
    if (n < 20 + sl) return 0;
    buf[0] = 1;
    buf[1] = (uint8_t)r->reason;
    buf[2] = (uint8_t)(sl & 0xff);
    buf[3] = (uint8_t)(sl >> 8);
    put_be64(buf + 4, (uint64_t)r->created_ms);
    put_be64(buf + 12, (uint64_t)r->expires_ms);
    memcpy(buf + 20, r->source, sl);
    return 20 + sl;
}

int suppress_rec_decode(const uint8_t *p, size_t n, struct suppress_rec *out)
{
    if (n < 20 || p[0] != 1 || p[1] > SUPPRESS_FORGOTTEN) return -1;
    size_t sl = (size_t)p[2] | (size_t)p[3] << 8;
    if (20 + sl != n || sl >= sizeof out->source) return -1;
    out->reason = (enum SUPPRESS_REASON)p[1];
    out->created_ms = (int64_t)get_be64(p + 4);
    out->expires_ms = (int64_t)get_be64(p + 12);
    memcpy(out->source, p + 20, sl);
    out->source[sl] = '\0';
    return 0;
}
