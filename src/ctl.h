/*
 * ctl - the control socket that volleyctl talks to.
 *
 * Protocol: a client connects to control.socket (unix stream), writes one request
 * per line as a JSON object, and reads one reply line per request (JSON object).
 * Requests are answered in order; the connection may carry many.  A request line
 * is at most 64 KiB.  Every reply has "ok": true|false; failures carry "error"
 * (a one-line human message).
 *
 *   {"cmd":"status"}
 *     -> {"ok":true,"version":"0.1.0","pid":N,"uptime_s":N,
 *         "queue":{"messages":N,"recipients":N,"due":N},
 *         "spool":{"dir":"...","used_bytes":N,"map_bytes":N,"commits":N,"ops":N},
 *         "inject":{"sessions":N,"accepted_msgs":N,"accepted_rcpts":N,"rejected":N}}
 *
 *   {"cmd":"queue"[,"domain":D][,"campaign":C]}
 *     counts of current recipients, optionally filtered
 *     -> {"ok":true,"total":{"messages":N,"recipients":N},
 *         "by_state":{"queued":N,"deferred":N,"held":N},
 *         "by_domain":{"example.com":{"queued":N,"deferred":N,"held":N},...},
 *         "by_campaign":{"spring":{"queued":N,"deferred":N,"held":N},...}}
 *     ("deferred" = queued with attempts > 0; messages without a campaign are
 *     counted under "")
 *
 *   {"cmd":"list"[,"domain":D][,"campaign":C][,"limit":N]}
 *     -> {"ok":true,"messages":[{"id":"...","sender":"...","campaign":"...",
 *         "created":"RFC3339","size":N,"recipients":N},...],"truncated":bool}
 *
 *   {"cmd":"show","id":"16HEX"}
 *     -> {"ok":true,"id":"...","sender":"...","campaign":"...","created":"RFC3339",
 *         "size":N,"client":"...","helo":"...","flags":["8bitmime","smtputf8"],
 *         "headers":"<the header section as text, CRLFs kept; invalid UTF-8 replaced>",
 *         "recipients":[{"index":N,"address":"...","domain":"...","state":
 *             "queued|deferred|held","attempts":N,"next_attempt":"RFC3339",
 *             "last_reply":"..."},...]}
 *
 *   {"cmd":"cat","id":"16HEX"}
 *     -> {"ok":true,"size":N} followed by exactly N raw bytes (the stored message)
 *
 *   {"cmd":"hold"|"release"|"delete", one of "id":"16HEX" | "domain":D | "campaign":C}
 *     -> {"ok":true,"recipients":N,"messages":M}   (messages touched; for delete:
 *        messages removed because no recipient was left)
 *     answered after the change is committed; nothing matched -> ok with zeros
 *
 *   {"cmd":"retry", one of "id":"16HEX" | "domain":D | "campaign":C}
 *     queued (incl. deferred) recipients become due now; the workers also forget
 *     every site's down state and their cached DNS answers (for the given domain's
 *     name: its route is looked up again), so the retry really goes out
 *     -> {"ok":true,"recipients":N,"messages":M}
 *
 *   {"cmd":"sites"}
 *     -> {"ok":true,"sites":[{"site":"mx1.a.test,mx2.a.test","hosts":[...],
 *         "connections":N,"idle":N,"queued":N,"delivered":N,"deferred":N,
 *         "bounced":N,"last_reply":"...","down_until":"RFC3339 or empty",
 *         "down_reason":"...","worker":N},...]}
 *     (delivered/deferred/bounced: recipients since start)
 *
 *   {"cmd":"suppress_add","entries":[{"address":"a@b.example" | "@b.example" |
 *        "#<sha256 hex>","scope":"" | "domain:SENDERDOMAIN" | "list:NAME",
 *        "reason":"manual" (default) | "hard-bounce" | "complaint" | "unsubscribe" |
 *        "soft-bounce","source":"text","expires_at":EPOCH_SECONDS (0/absent = never)},
 *        ...(1 to 5000)][,"purge":true]}
 *     every entry is checked first (a bad one refuses the request: "entry N: why");
 *     then stored, and (purge, the default) the queued recipients each matches are
 *     removed in the same commit, each with a "suppressed" accounting record
 *     -> {"ok":true,"applied":N (new),"existing":N,"purged":N}
 *   {"cmd":"suppress_remove","entries":[{"address":...,"scope":...},...]}
 *     -> {"ok":true,"applied":N (removed),"existing":0,"purged":0}
 *   {"cmd":"forget","address":A}
 *     privacy erasure: A's entries in every scope are removed, only the SHA-256 of
 *     the normalised address is kept (reason "forgotten"), and every queued
 *     recipient A is purged -> {"ok":true,"applied":0|1,"existing":0,"purged":N}
 *   {"cmd":"suppress_check","address":A[,"sender":S][,"list":L]}
 *     -> {"ok":true,"address":"normalised","suppressed":bool[,"entry":{"scope",
 *         "address","reason","created","expires","source"}]}
 *   {"cmd":"suppress_list"[,"scope":S][,"after":{"scope":S,"address":T}][,"limit":N]}
 *     a page of entries in key order (at most 10000) -> {"ok":true,"entries":[{"scope",
 *     "address","reason","created","expires","source"},...],"more":bool}; page on
 *     with "after" = the last entry
 *
 *   {"cmd":"sent","id":"16HEX","index":N}
 *     a delivered recipient's sent record (kept feedback.sent_retention)
 *     -> {"ok":true,"found":bool[,"recipient","campaign","list","sender"]}
 *
 *   {"cmd":"verify"} -> {"ok":true,"violations":N,"first":"..."}
 *   {"cmd":"log_rotate"} -> {"ok":true}
 *
 * Unknown commands or bad arguments -> {"ok":false,"error":"..."}.
 */
#ifndef VOLLEY_CTL_H
#define VOLLEY_CTL_H

struct engine;

/* ctl_listen - bind control.socket and serve it on the engine's loop; 0 or -1 */
int ctl_listen(struct engine *eng);
/* ctl_shutdown - close the listener and every control connection */
void ctl_shutdown(struct engine *eng);

#endif
