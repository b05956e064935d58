/*
 * loadgen: an SSE fan-out load generator, one epoll loop, non-blocking sockets.
 *
 * Strategy: the load generator must cost far less than the servers it
 * measures, so it is C, single-threaded, and does one read() per readiness
 * event. It opens N connections to GET <path>, paced (a bounded number in
 * flight, or accept queues overflow and connects stall for seconds), then
 * walks through phases:
 *
 *   CONNECT  until every client has its response headers (or --connect-timeout)
 *   WARMUP   events are parsed but not counted
 *   WINDOW   events are counted; latency is sampled; churn runs; the stalled
 *            clients stop reading at --stall-at seconds into the window
 *   SETTLE   (only with --settle) nothing is counted; churn has stopped
 *   DRAIN    (only with --stalled) stalled clients read again, to learn
 *            whether the server evicted them (EOF or reset) or kept them
 *
 * --port takes a comma-separated list ("8001,8002"): client i connects to the
 * (i mod n)-th port, so one loop loads several server processes with one
 * measured window; the JSON then has per-port counts and latencies.
 *
 * At each phase change it prints a marker line ("#window", "#stall", "#end",
 * "#settled") on stdout, flushed, so a driver can sample the server's CPU and
 * RSS at the same instants; at the end it prints one JSON object.
 *
 * Bodies may be chunked or close-delimited. The body is scanned for lines
 * starting with "data: "; each such line is one event, whose payload starts
 * with "<CLOCK_MONOTONIC ns> <seq>". Latency is clock_gettime(CLOCK_MONOTONIC)
 * at read time minus that timestamp (server and client share the clock), kept
 * in a log-linear histogram of microseconds (under 1% error). A jump in seq
 * on one connection counts as missed events ("gaps").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HDR_MAX 8192
#define LINE_KEEP 96 /* bytes of each line kept: enough for "data: <ns> <seq>" */
#define READ_BUF (256 * 1024)
#define MAX_EVENTS 1024
#define MAX_PORTS 16

/* ---- histogram: log-linear, 64 sub-buckets per power of two ---------- */

#define SUB 64
#define NBUCKETS (SUB * 64)

typedef struct {
    uint64_t counts[NBUCKETS];
    uint64_t total;
    uint64_t max;
} hist_t;

static int hist_index(uint64_t v) {
    if (v < 2 * SUB) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6; /* log2(SUB) == 6 */
    return (shift + 1) * SUB + (int)((v >> shift) - SUB);
}

/* The largest value that falls in bucket i (percentiles err on the high side). */
static uint64_t hist_upper(int i) {
    if (i < 2 * SUB) return (uint64_t)i;
    int shift = i / SUB - 1;
    uint64_t sub = (uint64_t)(i % SUB) + SUB;
    return ((sub + 1) << shift) - 1;
}

static void hist_add(hist_t *h, uint64_t v) {
    int i = hist_index(v);
    if (i >= NBUCKETS) i = NBUCKETS - 1;
    h->counts[i]++;
    h->total++;
    if (v > h->max) h->max = v;
}

static uint64_t hist_pct(const hist_t *h, double p) {
    if (h->total == 0) return 0;
    uint64_t want = (uint64_t)(p / 100.0 * (double)h->total);
    if (want == 0) want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < NBUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            uint64_t u = hist_upper(i);
            return u < h->max ? u : h->max;
        }
    }
    return h->max;
}

static void hist_json(FILE *f, const char *name, const hist_t *h) {
    fprintf(f,
            "\"%s\":{\"count\":%llu,\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,"
            "\"p999\":%llu,\"max\":%llu}",
            name, (unsigned long long)h->total, (unsigned long long)hist_pct(h, 50),
            (unsigned long long)hist_pct(h, 90), (unsigned long long)hist_pct(h, 99),
            (unsigned long long)hist_pct(h, 99.9), (unsigned long long)h->max);
}

/* ---- connections ------------------------------------------------------ */

enum { C_IDLE, C_CONNECTING, C_HEADERS, C_BODY, C_DONE };
enum { CS_SIZE, CS_EXT, CS_DATA, CS_DATA_END, CS_TRAILER };
enum { P_CONNECT, P_WARMUP, P_WINDOW, P_SETTLE, P_DRAIN, P_END };

typedef struct {
    int fd;
    int state;
    int port_idx;     /* which of --port's ports it connects to */
    int stalled;      /* one of the clients that stop reading */
    int paused;       /* currently not reading (stalled during the window) */
    int chunked;
    int cstate;
    uint64_t crem;    /* chunk bytes remaining, or the size being parsed */
    uint64_t t_start; /* ns: connect() called */
    char *hdr;        /* response head, allocated only while it is read */
    int hdr_len;
    char line[LINE_KEEP];
    int line_len;
    int64_t last_seq;
    uint64_t window_events;
    int whole_window; /* established for the whole window (for "starved") */
    int evicted;
    int ever;         /* ever got its response headers */
    uint64_t drained;
    uint64_t drain_gaps;
    uint64_t drain_max_lag_us;
} conn_t;

static struct {
    const char *host;
    int port; /* the first of ports[] */
    int ports[MAX_PORTS];
    int nports;
    const char *path;
    int clients;
    int inflight;
    double warmup, duration, connect_timeout, stall_at, settle, drain;
    int stalled;
    int stall_rcvbuf;
    double churn; /* percent of clients reconnecting per second */
    unsigned seed;
} opt = {"127.0.0.1", 0, {0}, 0, "/sub", 100, 64, 2.0, 10.0, 60.0, -1.0, 0.0, 3.0, 0, 4096, 0.0, 1};

static conn_t *conns;
static int epfd;
static int phase = P_CONNECT;
static struct sockaddr_in addrs[MAX_PORTS];
static char requests[MAX_PORTS][512];
static int request_lens[MAX_PORTS];
static hist_t port_lat[MAX_PORTS];
static uint64_t port_events[MAX_PORTS];
static int port_connected_at_window[MAX_PORTS];
static int next_to_connect; /* index of the next client for the initial connects */
static int in_flight;
static int established;     /* currently in C_BODY */
static int ever_established;
static int failed;          /* refused, reset before headers, non-200, timed out */
static int cut;             /* closed by the server after headers, not evicted-stalled */
static int cut_in_window;
static int status_errors;
static uint64_t churned;

static hist_t lat_all, lat_pre, lat_post, conn_hist, reconn_hist;
static uint64_t events_window, events_drain, gaps, reorders, bad_lines;
static uint64_t stall_window_events;
static int connected_at_window;
static int served; /* at the window's end: connected, not stalled, got events in it */
static int64_t max_seq_seen = -1, seq_at_window_start = -1, seq_at_window_end = -1;
static uint64_t t_window_start, t_window_end, t_stall;
static double cpu_window_start, cpu_window_end, user_window_start, user_window_end;
static uint64_t bytes_read;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* This process's CPU seconds so far: user in *user, user + system returned. */
static double self_cpu(double *user) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    return *user + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void marker(const char *m) {
    printf("#%s\n", m);
    fflush(stdout);
}

static void set_events(conn_t *c, int idx, uint32_t ev) {
    struct epoll_event e = {.events = ev, .data.u32 = (uint32_t)idx};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e);
}

static void close_conn(conn_t *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (c->state == C_BODY) established--;
    if (c->state == C_CONNECTING || c->state == C_HEADERS) in_flight--;
    free(c->hdr);
    c->hdr = NULL;
    c->state = C_DONE;
}

static void start_connect(int idx) {
    conn_t *c = &conns[idx];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    c->t_start = now_ns();
    c->hdr_len = 0;
    c->line_len = 0;
    c->last_seq = -1;
    c->chunked = 0;
    c->cstate = CS_SIZE;
    c->crem = 0;
    c->whole_window = 0;
    if (c->fd < 0) {
        perror("socket");
        c->state = C_DONE;
        failed++;
        return;
    }
    if (c->stalled && opt.stall_rcvbuf > 0) {
        /* Small receive buffer, set before connect so the window is small too:
           a stalled client then backs up into the server quickly. */
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &opt.stall_rcvbuf, sizeof(int));
        /* Loopback's 64 KiB MSS makes the server's send buffer autotune to
           megabytes (about 2 x cwnd x MSS): an internet-sized MSS keeps the
           kernel's share of a stalled stream near a real network's. */
        int mss = 1448;
        setsockopt(c->fd, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof(int));
    }
    c->hdr = malloc(HDR_MAX);
    in_flight++;
    c->state = C_CONNECTING;
    int r = connect(c->fd, (struct sockaddr *)&addrs[c->port_idx], sizeof addrs[0]);
    if (r < 0 && errno != EINPROGRESS) {
        close_conn(c);
        failed++;
        return;
    }
    struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)idx};
    epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e);
}

/* ---- event parsing ---------------------------------------------------- */

static void on_event(conn_t *c, int64_t ts, int64_t seq, uint64_t now) {
    if (seq > max_seq_seen) max_seq_seen = seq;
    if (phase == P_DRAIN) {
        if (c->stalled) {
            uint64_t lag_us = now > (uint64_t)ts ? (now - (uint64_t)ts) / 1000 : 0;
            c->drained++;
            events_drain++;
            if (lag_us > c->drain_max_lag_us) c->drain_max_lag_us = lag_us;
            if (c->last_seq >= 0 && seq > c->last_seq + 1)
                c->drain_gaps += (uint64_t)(seq - c->last_seq - 1);
        }
        c->last_seq = seq;
        return;
    }
    if (phase == P_WINDOW) {
        uint64_t lat_us = now > (uint64_t)ts ? (now - (uint64_t)ts) / 1000 : 0;
        events_window++;
        port_events[c->port_idx]++;
        c->window_events++;
        if (c->stalled) stall_window_events++;
        if (!c->stalled) {
            hist_add(&lat_all, lat_us);
            if (opt.nports > 1) hist_add(&port_lat[c->port_idx], lat_us);
            if (opt.stalled > 0) hist_add(t_stall && now >= t_stall ? &lat_post : &lat_pre, lat_us);
        }
        if (c->last_seq >= 0) {
            if (seq > c->last_seq + 1) gaps += (uint64_t)(seq - c->last_seq - 1);
            else if (seq <= c->last_seq) reorders++;
        }
    }
    c->last_seq = seq;
}

static void on_line(conn_t *c, uint64_t now) {
    const char *s = c->line;
    int n = c->line_len;
    if (n > 0 && s[n - 1] == '\r') n--;
    if (n < 6 || memcmp(s, "data: ", 6) != 0) return; /* comments, pings, other fields */
    int i = 6;
    int64_t ts = 0, seq = 0;
    int digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') ts = ts * 10 + (s[i++] - '0'), digits++;
    if (!digits || i >= n || s[i] != ' ') {
        bad_lines++;
        return;
    }
    i++;
    digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9') seq = seq * 10 + (s[i++] - '0'), digits++;
    if (!digits) {
        bad_lines++;
        return;
    }
    on_event(c, ts, seq, now);
}

static void scan_lines(conn_t *c, const char *p, size_t n, uint64_t now) {
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        size_t room = (size_t)(LINE_KEEP - c->line_len);
        size_t keep = take < room ? take : room;
        memcpy(c->line + c->line_len, p, keep);
        c->line_len += (int)keep;
        if (!nl) return;
        on_line(c, now);
        c->line_len = 0;
        p = nl + 1;
        n -= take + 1;
    }
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Feed body bytes; returns 0, or -1 when the chunked stream has ended. */
static int on_body(conn_t *c, const char *p, size_t n, uint64_t now) {
    if (!c->chunked) {
        scan_lines(c, p, n, now);
        return 0;
    }
    while (n) {
        switch (c->cstate) {
        case CS_SIZE: {
            char ch = *p++;
            n--;
            int v = hexval(ch);
            if (v >= 0) c->crem = c->crem * 16 + (uint64_t)v;
            else if (ch == '\n') c->cstate = c->crem ? CS_DATA : CS_TRAILER;
            else c->cstate = CS_EXT; /* ';' extension or '\r' */
            break;
        }
        case CS_EXT: {
            char ch = *p++;
            n--;
            if (ch == '\n') c->cstate = c->crem ? CS_DATA : CS_TRAILER;
            break;
        }
        case CS_DATA: {
            size_t take = n < c->crem ? n : (size_t)c->crem;
            scan_lines(c, p, take, now);
            p += take;
            n -= take;
            c->crem -= take;
            if (c->crem == 0) c->cstate = CS_DATA_END;
            break;
        }
        case CS_DATA_END: {
            char ch = *p++;
            n--;
            if (ch == '\n') c->cstate = CS_SIZE, c->crem = 0;
            break;
        }
        case CS_TRAILER:
            return -1;
        }
    }
    return 0;
}

/* Parse the response head once it is complete; returns body offset or -1. */
static int on_head(conn_t *c, uint64_t now, int idx) {
    char *end = memmem(c->hdr, (size_t)c->hdr_len, "\r\n\r\n", 4);
    if (!end) return 0;
    *end = '\0';
    if (c->hdr_len < 12 || memcmp(c->hdr, "HTTP/1.", 7) != 0 || memcmp(c->hdr + 9, "200", 3) != 0) {
        status_errors++;
        return -1;
    }
    /* Lower-case the head in place, then look for the Transfer-Encoding line. */
    for (char *q = c->hdr; *q; q++)
        if (*q >= 'A' && *q <= 'Z') *q = (char)(*q | 0x20);
    char *te = strstr(c->hdr, "\r\ntransfer-encoding:");
    if (te) {
        char *eol = strstr(te + 2, "\r\n");
        char *ck = strstr(te, "chunked");
        c->chunked = ck && (!eol || ck < eol);
    }
    uint64_t us = (now - c->t_start) / 1000;
    if (phase == P_WINDOW || phase == P_SETTLE) hist_add(&reconn_hist, us);
    else hist_add(&conn_hist, us);
    c->state = C_BODY;
    in_flight--;
    established++;
    ever_established++;
    c->ever = 1;
    (void)idx;
    return (int)(end - c->hdr) + 4;
}

static void conn_lost(conn_t *c) {
    if (c->state == C_BODY) {
        if (phase == P_DRAIN && c->stalled) {
            c->evicted = 1;
        } else if (c->stalled && c->paused) {
            c->evicted = 1; /* reset while paused: the server gave up on it */
        } else {
            cut++;
            if (phase == P_WINDOW) cut_in_window++;
        }
    } else {
        failed++;
    }
    close_conn(c);
}

static char rbuf[READ_BUF];

static void on_readable(int idx, uint64_t now) {
    conn_t *c = &conns[idx];
    ssize_t r = read(c->fd, rbuf, sizeof rbuf);
    if (r < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        conn_lost(c);
        return;
    }
    if (r == 0) {
        conn_lost(c);
        return;
    }
    bytes_read += (uint64_t)r;
    const char *p = rbuf;
    size_t n = (size_t)r;
    if (c->state == C_HEADERS) {
        size_t room = (size_t)(HDR_MAX - 1 - c->hdr_len);
        size_t take = n < room ? n : room;
        memcpy(c->hdr + c->hdr_len, p, take);
        int old = c->hdr_len;
        c->hdr_len += (int)take;
        c->hdr[c->hdr_len] = '\0';
        int off = on_head(c, now, idx);
        if (off < 0 || (off == 0 && c->hdr_len >= HDR_MAX - 1)) {
            conn_lost(c);
            return;
        }
        if (off == 0) return;
        free(c->hdr);
        c->hdr = NULL;
        p += off - old;
        n -= (size_t)(off - old);
    }
    if (on_body(c, p, n, now) < 0) conn_lost(c);
}

static void on_writable(int idx) {
    conn_t *c = &conns[idx];
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
        conn_lost(c);
        return;
    }
    int req_len = request_lens[c->port_idx];
    ssize_t w = send(c->fd, requests[c->port_idx], (size_t)req_len, MSG_NOSIGNAL);
    if (w != req_len) {
        conn_lost(c);
        return;
    }
    c->state = C_HEADERS;
    set_events(c, idx, EPOLLIN);
}

/* ---- main loop -------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --port P[,P2...] [--host H] [--path /sub] [--clients N] [--inflight K]\n"
            "  [--warmup S] [--duration S] [--connect-timeout S]\n"
            "  [--stalled N --stall-at S --stall-rcvbuf BYTES --drain S]\n"
            "  [--churn PERCENT_PER_S] [--settle S] [--seed N]\n");
    exit(2);
}

static void parse_args(int argc, char **argv) {
    static struct option lo[] = {
        {"host", 1, 0, 'h'},     {"port", 1, 0, 'p'},    {"path", 1, 0, 'P'},
        {"clients", 1, 0, 'c'},  {"inflight", 1, 0, 'i'}, {"warmup", 1, 0, 'w'},
        {"duration", 1, 0, 'd'}, {"connect-timeout", 1, 0, 't'},
        {"stalled", 1, 0, 's'},  {"stall-at", 1, 0, 'a'}, {"stall-rcvbuf", 1, 0, 'b'},
        {"drain", 1, 0, 'D'},    {"churn", 1, 0, 'C'},    {"settle", 1, 0, 'S'},
        {"seed", 1, 0, 'r'},     {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': {
            char *save = NULL;
            opt.nports = 0;
            for (char *tok = strtok_r(optarg, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (opt.nports == MAX_PORTS) usage();
                opt.ports[opt.nports++] = atoi(tok);
            }
            opt.port = opt.nports ? opt.ports[0] : 0;
            break;
        }
        case 'P': opt.path = optarg; break;
        case 'c': opt.clients = atoi(optarg); break;
        case 'i': opt.inflight = atoi(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 't': opt.connect_timeout = atof(optarg); break;
        case 's': opt.stalled = atoi(optarg); break;
        case 'a': opt.stall_at = atof(optarg); break;
        case 'b': opt.stall_rcvbuf = atoi(optarg); break;
        case 'D': opt.drain = atof(optarg); break;
        case 'C': opt.churn = atof(optarg); break;
        case 'S': opt.settle = atof(optarg); break;
        case 'r': opt.seed = (unsigned)atoi(optarg); break;
        default: usage();
        }
    }
    for (int k = 0; k < opt.nports; k++)
        if (opt.ports[k] <= 0) usage();
    if (opt.port <= 0 || opt.clients <= 0 || opt.inflight <= 0 || opt.stalled > opt.clients) usage();
    if (opt.stall_at < 0) opt.stall_at = opt.duration / 2;
}

static uint64_t sec(double s) { return (uint64_t)(s * 1e9); }

int main(int argc, char **argv) {
    parse_args(argc, argv);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    for (int k = 0; k < opt.nports; k++) {
        memset(&addrs[k], 0, sizeof addrs[k]);
        addrs[k].sin_family = AF_INET;
        addrs[k].sin_port = htons((uint16_t)opt.ports[k]);
        if (inet_pton(AF_INET, opt.host, &addrs[k].sin_addr) != 1) {
            fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
            return 2;
        }
        request_lens[k] = snprintf(requests[k], sizeof requests[k],
                                   "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
                                   "Cache-Control: no-cache\r\n\r\n",
                                   opt.path, opt.host, opt.ports[k]);
    }
    conns = calloc((size_t)opt.clients, sizeof *conns);
    for (int i = 0; i < opt.clients; i++) {
        conns[i].fd = -1;
        conns[i].state = C_IDLE;
        conns[i].port_idx = i % opt.nports;
        /* Spread the stalled clients over the population. */
        if (opt.stalled > 0 && i % (opt.clients / opt.stalled) == 0 &&
            i / (opt.clients / opt.stalled) < opt.stalled)
            conns[i].stalled = 1;
    }
    srand(opt.seed);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event evs[MAX_EVENTS];

    uint64_t t0 = now_ns();
    uint64_t t_phase_end = t0 + sec(opt.connect_timeout);
    uint64_t next_churn = 0;
    double churn_acc = 0;
    int stall_started = 0;

    while (phase != P_END) {
        uint64_t now = now_ns();
        /* Phase transitions. */
        if (phase == P_CONNECT) {
            while (in_flight < opt.inflight && next_to_connect < opt.clients)
                start_connect(next_to_connect++);
            int all_done = next_to_connect >= opt.clients && in_flight == 0;
            if (all_done || now >= t_phase_end) {
                for (int i = 0; i < opt.clients; i++) {
                    if (conns[i].state == C_CONNECTING || conns[i].state == C_HEADERS) {
                        close_conn(&conns[i]);
                        failed++;
                    }
                }
                phase = P_WARMUP;
                marker("warmup");
                t_phase_end = now + sec(opt.warmup);
            }
        } else if (phase == P_WARMUP && now >= t_phase_end) {
            phase = P_WINDOW;
            for (int i = 0; i < opt.clients; i++) {
                conns[i].whole_window = conns[i].state == C_BODY;
                connected_at_window += conns[i].whole_window;
                port_connected_at_window[conns[i].port_idx] += conns[i].whole_window;
            }
            seq_at_window_start = max_seq_seen;
            cpu_window_start = self_cpu(&user_window_start);
            t_window_start = now;
            t_phase_end = now + sec(opt.duration);
            next_churn = now + 10000000ull;
            marker("window");
        } else if (phase == P_WINDOW) {
            if (!stall_started && opt.stalled > 0 && now >= t_window_start + sec(opt.stall_at)) {
                stall_started = 1;
                t_stall = now;
                for (int i = 0; i < opt.clients; i++) {
                    if (conns[i].stalled && conns[i].state == C_BODY) {
                        conns[i].paused = 1;
                        set_events(&conns[i], i, 0);
                    }
                }
                marker("stall");
            }
            if (opt.churn > 0 && now >= next_churn) {
                churn_acc += opt.churn / 100.0 * opt.clients * 0.01;
                next_churn += 10000000ull;
                int tries = 0;
                while (churn_acc >= 1.0 && tries++ < 1000) {
                    int i = rand() % opt.clients;
                    if (conns[i].stalled || conns[i].state != C_BODY) continue;
                    churn_acc -= 1.0;
                    close_conn(&conns[i]);
                    conns[i].whole_window = 0;
                    churned++;
                    start_connect(i);
                }
            }
            if (now >= t_phase_end) {
                t_window_end = now;
                for (int i = 0; i < opt.clients; i++)
                    served += conns[i].state == C_BODY && !conns[i].stalled &&
                              conns[i].window_events > 0;
                cpu_window_end = self_cpu(&user_window_end);
                seq_at_window_end = max_seq_seen;
                marker("end");
                if (opt.settle > 0) {
                    phase = P_SETTLE;
                    t_phase_end = now + sec(opt.settle);
                } else if (opt.stalled > 0) {
                    phase = P_DRAIN;
                    t_phase_end = now + sec(opt.drain);
                } else {
                    phase = P_END;
                }
                if (phase == P_DRAIN) {
                    for (int i = 0; i < opt.clients; i++)
                        if (conns[i].paused && conns[i].state == C_BODY) set_events(&conns[i], i, EPOLLIN);
                }
            }
        } else if (phase == P_SETTLE && now >= t_phase_end) {
            marker("settled");
            if (opt.stalled > 0) {
                phase = P_DRAIN;
                t_phase_end = now + sec(opt.drain);
                for (int i = 0; i < opt.clients; i++)
                    if (conns[i].paused && conns[i].state == C_BODY) set_events(&conns[i], i, EPOLLIN);
            } else {
                phase = P_END;
            }
        } else if (phase == P_DRAIN) {
            int open = 0;
            for (int i = 0; i < opt.clients; i++)
                if (conns[i].stalled && conns[i].state == C_BODY) open++;
            if (open == 0 || now >= t_phase_end) phase = P_END;
        }
        if (phase == P_END) break;

        uint64_t wake = t_phase_end;
        if (phase == P_WINDOW && opt.churn > 0 && next_churn < wake) wake = next_churn;
        if (phase == P_WINDOW && opt.stalled > 0 && !stall_started) {
            uint64_t ts = t_window_start + sec(opt.stall_at);
            if (ts < wake) wake = ts;
        }
        int timeout_ms = wake > now ? (int)((wake - now) / 1000000ull) + 1 : 0;
        if (phase == P_DRAIN && timeout_ms > 50) timeout_ms = 50;
        int n = epoll_wait(epfd, evs, MAX_EVENTS, timeout_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        now = now_ns();
        for (int k = 0; k < n; k++) {
            int idx = (int)evs[k].data.u32;
            conn_t *c = &conns[idx];
            if (c->fd < 0) continue;
            if (c->state == C_CONNECTING) {
                if (evs[k].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_writable(idx);
            } else if (c->paused && phase != P_DRAIN) {
                if (evs[k].events & (EPOLLERR | EPOLLHUP)) conn_lost(c);
            } else {
                on_readable(idx, now);
            }
        }
    }

    /* ---- report ---- */
    double window_s = (double)(t_window_end - t_window_start) / 1e9;
    int starved = 0, connected_at_end = 0, stalled_evicted = 0, stalled_open = 0;
    uint64_t stalled_drained = 0, stalled_gaps = 0, stalled_lag = 0;
    for (int i = 0; i < opt.clients; i++) {
        conn_t *c = &conns[i];
        if (c->state == C_BODY) connected_at_end++;
        if (c->whole_window && !c->stalled && c->window_events == 0) starved++;
        if (c->stalled) {
            stalled_evicted += c->evicted;
            stalled_open += c->state == C_BODY;
            stalled_drained += c->drained;
            stalled_gaps += c->drain_gaps;
            if (c->drain_max_lag_us > stalled_lag) stalled_lag = c->drain_max_lag_us;
        }
    }
    int never = 0;
    for (int i = 0; i < opt.clients; i++) never += !conns[i].ever;
    FILE *f = stdout;
    fprintf(f, "{\"clients\":%d,\"connected_at_window\":%d,\"never_connected\":%d,", opt.clients,
            connected_at_window, never);
    fprintf(f, "\"connected_at_end\":%d,\"failed_connects\":%d,\"status_errors\":%d,", connected_at_end,
            failed, status_errors);
    fprintf(f, "\"cut\":%d,\"cut_in_window\":%d,\"starved\":%d,\"served\":%d,", cut,
            cut_in_window, starved, served);
    fprintf(f, "\"window_s\":%.6f,\"events\":%llu,\"events_per_s\":%.1f,", window_s,
            (unsigned long long)events_window, window_s > 0 ? (double)events_window / window_s : 0.0);
    fprintf(f, "\"gaps\":%llu,\"reorders\":%llu,\"bad_lines\":%llu,\"bytes_read\":%llu,",
            (unsigned long long)gaps, (unsigned long long)reorders, (unsigned long long)bad_lines,
            (unsigned long long)bytes_read);
    double published = (seq_at_window_end >= 0 && seq_at_window_start >= 0)
                           ? (double)(seq_at_window_end - seq_at_window_start) / window_s
                           : 0.0;
    fprintf(f, "\"published_per_s\":%.2f,", published);
    hist_json(f, "latency_us", &lat_all);
    fputc(',', f);
    hist_json(f, "connect_us", &conn_hist);
    fputc(',', f);
    hist_json(f, "reconnect_us", &reconn_hist);
    fprintf(f, ",\"churned\":%llu,", (unsigned long long)churned);
    fprintf(f, "\"stall\":{\"clients\":%d,\"at_s\":%.3f,\"evicted\":%d,\"still_open\":%d,"
               "\"window_events\":%llu,\"drained_events\":%llu,\"drain_gaps\":%llu,"
               "\"drain_max_lag_us\":%llu,",
            opt.stalled, opt.stalled ? (double)(t_stall - t_window_start) / 1e9 : 0.0,
            stalled_evicted, stalled_open, (unsigned long long)stall_window_events,
            (unsigned long long)stalled_drained, (unsigned long long)stalled_gaps,
            (unsigned long long)stalled_lag);
    hist_json(f, "others_before_us", &lat_pre);
    fputc(',', f);
    hist_json(f, "others_during_us", &lat_post);
    fprintf(f, "},\"per_port\":[");
    for (int k = 0; k < opt.nports; k++) {
        fprintf(f, "%s{\"port\":%d,\"connected_at_window\":%d,\"events\":%llu,", k ? "," : "",
                opt.ports[k], port_connected_at_window[k], (unsigned long long)port_events[k]);
        hist_json(f, "latency_us", opt.nports > 1 ? &port_lat[k] : &lat_all);
        fputc('}', f);
    }
    fprintf(f, "],\"cpu_s\":%.6f,\"cpu_user_s\":%.6f}\n", cpu_window_end - cpu_window_start,
            user_window_end - user_window_start);
    fflush(f);
    return 0;
}
