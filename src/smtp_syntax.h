/*
 * smtp_syntax - pure RFC 5321 / RFC 6531 syntax: command verbs, reverse- and
 * forward-paths, ESMTP parameters, domains.
 *
 * Shared by the server side (smtpd_) and, later, the client (smtpc_).  Every
 * function works on caller-owned memory, allocates nothing, never reads past the
 * given length, and is fuzzed (tests/fuzz/fuzz_smtp_syntax.c).  Error enums carry
 * the SMTP reply that a server should send, so the wording lives in one place.
 */
#ifndef VOLLEY_SMTP_SYNTAX_H
#define VOLLEY_SMTP_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>

/* RFC 5321 4.5.3.1 size limits (octets, without brackets). */
#define SMTP_LOCAL_MAX 64
#define SMTP_DOMAIN_MAX 255
#define SMTP_PATH_MAX 256
#define SMTP_CMDLINE_MAX 512 /* command line including CRLF, 4.5.3.1.4 */
#define SMTP_TEXTLINE_MAX 1000 /* text line including CRLF, 4.5.3.1.6 */

enum SMTP_CMD {
    SMTP_CMD_UNKNOWN = 0,
    SMTP_CMD_HELO,
    SMTP_CMD_EHLO,
    SMTP_CMD_MAIL,
    SMTP_CMD_RCPT,
    SMTP_CMD_DATA,
    SMTP_CMD_RSET,
    SMTP_CMD_NOOP,
    SMTP_CMD_QUIT,
    SMTP_CMD_VRFY,
    SMTP_CMD_HELP,
    SMTP_CMD_STARTTLS,
    SMTP_CMD_BDAT,
};

/* smtp_cmd_str - the verb in upper case ("UNKNOWN" for SMTP_CMD_UNKNOWN) */
const char *smtp_cmd_str(enum SMTP_CMD cmd);

/*
 * smtp_command - classify a command line (without CRLF).  The verb is matched
 * case-insensitively and must be followed by end of line or a single space (MAIL and
 * RCPT: by " FROM:"/" TO:" handled in smtp_parse_path_arg, so their verb ends at the
 * space).  *arg is set to the first byte after the verb and its space (or to line+len
 * when there is none); *arglen to the remaining length.
 */
enum SMTP_CMD smtp_command(const char *line, size_t len, const char **arg, size_t *arglen);

enum SMTP_PATH_ERR {
    SMTP_PATH_OK = 0,
    SMTP_PATH_SYNTAX,        /* general syntax: missing FROM:/TO:, brackets, bad chars */
    SMTP_PATH_NO_BRACKETS,   /* path not enclosed in <> */
    SMTP_PATH_LOCAL_TOO_LONG,
    SMTP_PATH_DOMAIN_TOO_LONG,
    SMTP_PATH_TOO_LONG,
    SMTP_PATH_BAD_LOCAL,     /* local part syntax (dot-string or quoted-string) */
    SMTP_PATH_BAD_DOMAIN,    /* domain or address literal syntax */
    SMTP_PATH_NO_DOMAIN,     /* forward-path without @domain (only "postmaster" may) */
    SMTP_PATH_NEED_SMTPUTF8, /* non-ASCII but SMTPUTF8 was not given */
    SMTP_PATH_BAD_UTF8,      /* malformed UTF-8 */
    SMTP_PATH_NULL_RCPT,     /* RCPT TO:<> */
};

/* smtp_path_err_str - enum name, e.g. "SMTP_PATH_LOCAL_TOO_LONG" */
const char *smtp_path_err_str(enum SMTP_PATH_ERR err);

/*
 * smtp_path_err_reply - the full reply line (no CRLF) a server sends for err, e.g.
 * "553 5.1.3 Local part of address is longer than 64 octets".  is_rcpt selects
 * 5.1.3 (recipient) vs 5.1.7 (sender) in the enhanced status; never NULL.
 */
const char *smtp_path_err_reply(enum SMTP_PATH_ERR err, bool is_rcpt);

struct smtp_path {
    char addr[SMTP_PATH_MAX + 1]; /* "local@domain" as given, NUL-terminated; "" = null path */
    size_t local_len;             /* bytes of the local part in addr (quotes included) */
    char domain[SMTP_DOMAIN_MAX + 3]; /* domain lowercased (ASCII letters only), or literal
                                         with its brackets; "" for the null path */
    bool is_null;                 /* "<>" */
    bool utf8;                    /* contains non-ASCII octets */
};

/*
 * smtp_parse_path_arg - parse the argument of MAIL ("FROM:<path> params") or RCPT
 * ("TO:<path> params").  The "FROM:"/"TO:" keyword is matched case-insensitively;
 * one optional space after the colon is tolerated (common clients send it).  Source
 * routes ("<@a,@b:user@d>") are accepted and their route dropped (RFC 5321 4.1.2).
 * MAIL allows the null path "<>"; RCPT allows "<postmaster>" without domain.  The
 * local part is a dot-string or quoted-string; the domain is a hostname
 * (LDH labels, each 1..63, total <= 255) or an address literal ([1.2.3.4] or
 * [IPv6:...]).  UTF-8 (RFC 6531) is accepted in the local part and domain only when
 * utf8_ok, and must be well-formed.  On success *params points to the first byte of
 * the parameters (after the spaces following ">") and *paramslen is their length
 * (0 when none).  Returns SMTP_PATH_OK or the first error found.
 */
enum SMTP_PATH_ERR smtp_parse_path_arg(const char *arg, size_t len, bool is_rcpt, bool utf8_ok,
                                       struct smtp_path *out, const char **params,
                                       size_t *paramslen);

/*
 * smtp_param_next - take the next ESMTP parameter "KEYWORD[=VALUE]" from *p (length
 * *plen), skipping leading spaces; advances *p and *plen past it.  The keyword
 * (ALPHA / DIGIT / "-", first char alnum) is copied upper-cased into key (size
 * keysz), the value (octets 33..126 except "=") into val (size valsz; "" when
 * absent).  Returns 1 when a parameter was taken, 0 at end of input, -1 on syntax
 * error or when key/val do not fit.
 */
int smtp_param_next(const char **p, size_t *plen, char *key, size_t keysz, char *val,
                    size_t valsz);

/*
 * smtp_domain_valid - 1 if d (length n) is a syntactically valid domain: LDH labels
 * (1..63 octets, no leading or trailing hyphen), at most 255 octets in all, an
 * optional final dot not allowed; with utf8_ok, labels may also hold well-formed
 * UTF-8 (U-labels).  Address literals are not domains here.
 */
int smtp_domain_valid(const char *d, size_t n, bool utf8_ok);

/* smtp_utf8_valid - 1 if s (length n) is well-formed UTF-8 (no overlongs,
 * no surrogates, nothing above U+10FFFF) */
int smtp_utf8_valid(const char *s, size_t n);

#endif
