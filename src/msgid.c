/*
 * msgid - time-ordered unique message ids (see msgid.h).
 */
#include "msgid.h"
#include "util.h"

#include <stdatomic.h>
#include <string.h>

#define MSGID_SEQ_BITS 20

static _Atomic uint64_t msgid_last;

uint64_t msgid_next(void)
{
    uint64_t want = (uint64_t)now_ms() << MSGID_SEQ_BITS;
    uint64_t last = atomic_load(&msgid_last);
    for (;;) {
        uint64_t id = want > last ? want : last + 1;
        if (atomic_compare_exchange_weak(&msgid_last, &last, id))
            return id;
    }
}

void msgid_floor(uint64_t id)
{
    uint64_t last = atomic_load(&msgid_last);
    while (id > last && !atomic_compare_exchange_weak(&msgid_last, &last, id))
        ;
}

void msgid_format(uint64_t id, char *buf)
{
    static const char hex[] = "0123456789ABCDEF";
    for (int i = MSGID_STR_LEN - 1; i >= 0; i--) {
        buf[i] = hex[id & 0xf];
        id >>= 4;
    }
    buf[MSGID_STR_LEN] = '\0';
}

int msgid_parse(const char *s, uint64_t *id)
{
    uint64_t v = 0;
    if (strlen(s) != MSGID_STR_LEN)
        return -1;
    for (int i = 0; i < MSGID_STR_LEN; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *id = v;
    return 0;
}

int64_t msgid_time_ms(uint64_t id)
{
    return (int64_t)(id >> MSGID_SEQ_BITS);
}
