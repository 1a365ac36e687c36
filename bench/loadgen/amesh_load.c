/* amesh_load: a compiled load generator for the relay benchmarks.
 *
 * One thread, epoll, non-blocking sockets and hand-built masked WebSocket frames, so that the
 * load costs far less CPU than the relay it measures. Two modes:
 *
 *   pairing    sessions as bench/relay_pairing.py runs them: the target opens a socket and
 *              sends listen, the controller opens one and sends connect, both get peer_found,
 *              four ~200-character data frames go each way (alternating), the target sends
 *              done, the controller closes, then the target closes. `concurrency` sessions
 *              stay in flight until `seconds` have passed.
 *   roundtrip  `concurrency` pairs are paired once; then each pair's first socket sends a
 *              1,024-character data frame, the second answers with the same, and the time
 *              until the answer arrives is one round trip; each pair does one at a time until
 *              `seconds` have passed.
 *
 * With several ports (--ports a,b,c) the target of session i uses port i mod N and its
 * controller port (i + 1) mod N, or the same port with --same-instance.
 *
 * Output: one JSON line with the counts, the wall time, this process's own CPU seconds and
 * the latency percentiles (a whole session in pairing mode, a round trip in roundtrip mode).
 *
 *   cc -O2 -o amesh_load amesh_load.c
 *   amesh_load pairing --ports 8080 --concurrency 200 --seconds 5
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define READ_BUFFER 16384
#define MAX_PORTS 16
#define MAX_EVENTS 256
#define SESSION_TIMEOUT_S 10.0
#define MAX_SAMPLES 4000000
#define MAX_FRAME 2048

enum op { OPEN, SEND, EXPECT, CLOSE, LAP, END };
enum who { TARGET, CONTROLLER };
enum conn_state { IDLE, CONNECTING, UPGRADING, READY, CLOSING, GONE };

struct step {
    enum op op;
    enum who who;
    const char *text; /* SEND: the message; EXPECT: the frame type */
};

/* {listen}/{connect} carry the session's code, written in at run time ("%06u"). */
static const char LISTEN[] = "{\"type\":\"listen\",\"otc\":\"%06u\"}";
static const char CONNECT[] = "{\"type\":\"connect\",\"otc\":\"%06u\"}";
static const char DONE[] = "{\"type\":\"done\"}";
static char session_data[256];  /* {"type":"data","payload":"AAA...(200)"} */
static char roundtrip_data[1100]; /* the same with 1,024 characters */

#define PAIRING_STEPS(data)                                                                  \
    {OPEN, TARGET, 0}, {SEND, TARGET, LISTEN}, {EXPECT, TARGET, "ack"}, {OPEN, CONTROLLER, 0}, \
        {SEND, CONTROLLER, CONNECT}, {EXPECT, TARGET, "peer_found"},                         \
        {EXPECT, CONTROLLER, "peer_found"}

#define EXCHANGE(data)                                                                        \
    {SEND, TARGET, data}, {EXPECT, CONTROLLER, "data"}, {SEND, CONTROLLER, data},             \
        {EXPECT, TARGET, "data"}

static const struct step pairing_script[] = {
    PAIRING_STEPS(session_data),
    EXCHANGE(session_data),
    EXCHANGE(session_data),
    EXCHANGE(session_data),
    EXCHANGE(session_data),
    {SEND, TARGET, DONE},
    {EXPECT, CONTROLLER, "done"},
    {CLOSE, CONTROLLER, 0},
    {CLOSE, TARGET, 0},
    {END, TARGET, 0},
};

#define ROUNDTRIP_LOOP 7 /* index of the first step of one round trip */
static const struct step roundtrip_script[] = {
    PAIRING_STEPS(roundtrip_data),
    EXCHANGE(roundtrip_data),
    {LAP, TARGET, 0},
    {CLOSE, CONTROLLER, 0},
    {CLOSE, TARGET, 0},
    {END, TARGET, 0},
};

struct session;

struct conn {
    int fd;
    enum conn_state state;
    struct session *session;
    size_t used;
    unsigned char in[READ_BUFFER];
};

struct session {
    struct conn conns[2];
    int step;
    unsigned code;
    unsigned number;
    double started;    /* the session (pairing) or the current round trip (roundtrip) */
    double opened_at;  /* for the timeout */
    int active;
};

static const struct step *script;
static int roundtrip;
static int epfd;
static struct sockaddr_in addresses[MAX_PORTS];
static int port_count;
static int cross = 1;
static char upgrade_request[512];
static size_t upgrade_length;
static double deadline;
static unsigned next_number;
static unsigned code_base;
static long completed, errors;
static char first_error[160];
static double *samples;
static long sample_count;
static uint32_t random_state = 2463534242u;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t next_random(void) {
    random_state ^= random_state << 13;
    random_state ^= random_state >> 17;
    random_state ^= random_state << 5;
    return random_state;
}

static void note_error(const char *what) {
    errors++;
    if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s", what);
}

static void record(double seconds) {
    completed++;
    if (sample_count < MAX_SAMPLES) samples[sample_count++] = seconds;
}

static int write_all(struct conn *c, const void *data, size_t length) {
    /* Frames are small and sockets drain at once on loopback; a short write is an error. */
    ssize_t sent = send(c->fd, data, length, MSG_NOSIGNAL);
    return sent == (ssize_t)length ? 0 : -1;
}

/* A masked client frame (RFC 6455 §5.2) with a fresh masking key. */
static int send_frame(struct conn *c, int opcode, const char *payload, size_t length) {
    unsigned char frame[MAX_FRAME + 16];
    size_t head = 0;
    if (length > MAX_FRAME) return -1;
    frame[head++] = 0x80 | opcode;
    if (length < 126) {
        frame[head++] = 0x80 | length;
    } else {
        frame[head++] = 0x80 | 126;
        frame[head++] = length >> 8;
        frame[head++] = length & 0xff;
    }
    uint32_t key = next_random();
    unsigned char mask[4];
    memcpy(mask, &key, 4);
    memcpy(frame + head, mask, 4);
    head += 4;
    for (size_t i = 0; i < length; i++) frame[head + i] = payload[i] ^ mask[i & 3];
    return write_all(c, frame, head + length);
}

static void close_conn(struct conn *c) {
    if (c->fd >= 0) {
        close(c->fd); /* also leaves the epoll set */
        c->fd = -1;
    }
    c->state = IDLE;
    c->used = 0;
}

static void start_session(struct session *s);

static void fail(struct session *s, const char *what) {
    note_error(what);
    close_conn(&s->conns[0]);
    close_conn(&s->conns[1]);
    s->active = 0;
    if (!roundtrip && now() < deadline) start_session(s);
}

static int open_conn(struct session *s, enum who who) {
    struct conn *c = &s->conns[who];
    unsigned slot = (s->number + (who == CONTROLLER ? cross : 0)) % port_count;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->session = s;
    c->used = 0;
    int rc = connect(c->fd, (struct sockaddr *)&addresses[slot], sizeof addresses[slot]);
    if (rc < 0 && errno != EINPROGRESS) return -1;
    c->state = CONNECTING;
    struct epoll_event event = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &event);
}

/* The next complete frame in c->in: its opcode, payload and total size; 0 when incomplete. */
static size_t next_frame(struct conn *c, int *opcode, unsigned char **payload, size_t *length) {
    if (c->used < 2) return 0;
    size_t head = 2, size = c->in[1] & 0x7f;
    if (size == 126) {
        if (c->used < 4) return 0;
        size = (c->in[2] << 8) | c->in[3];
        head = 4;
    } else if (size == 127) {
        return (size_t)-1; /* never sent by the relay to these sessions */
    }
    if (c->used < head + size) return 0;
    *opcode = c->in[0] & 0x0f;
    *payload = c->in + head;
    *length = size;
    return head + size;
}

static void consume(struct conn *c, size_t size) {
    memmove(c->in, c->in + size, c->used - size);
    c->used -= size;
}

static int is_type(const unsigned char *payload, size_t length, const char *type) {
    size_t n = strlen(type);
    return length > n + 10 && memcmp(payload, "{\"type\":\"", 9) == 0 &&
           memcmp(payload + 9, type, n) == 0 && payload[9 + n] == '"';
}

/* Answer pings; returns 1 when a text frame is waiting at the front, 0 when none, -1 on a
 * close frame or a malformed one. */
static int front_text(struct conn *c, unsigned char **payload, size_t *length, size_t *size) {
    for (;;) {
        int opcode;
        *size = next_frame(c, &opcode, payload, length);
        if (*size == 0) return 0;
        if (*size == (size_t)-1) return -1;
        if (opcode == 0x9) {
            if (send_frame(c, 0xA, (const char *)*payload, *length) < 0) return -1;
            consume(c, *size);
            continue;
        }
        if (opcode == 0x1) return 1;
        return -1;
    }
}

/* Run the session's script until it has to wait for the network. */
static void advance(struct session *s) {
    char text[64];
    for (;;) {
        const struct step *step = &script[s->step];
        struct conn *c = &s->conns[step->who];
        switch (step->op) {
        case OPEN:
            if (c->state == IDLE) {
                if (open_conn(s, step->who) < 0) return fail(s, "connect failed");
                return;
            }
            if (c->state != READY) return;
            break;
        case SEND: {
            const char *message = step->text;
            if (message == LISTEN || message == CONNECT) {
                snprintf(text, sizeof text, message, s->code);
                message = text;
            }
            if (send_frame(c, 0x1, message, strlen(message)) < 0) return fail(s, "send failed");
            break;
        }
        case EXPECT: {
            unsigned char *payload;
            size_t length, size;
            int found = front_text(c, &payload, &length, &size);
            if (found == 0) return;
            if (found < 0) return fail(s, "closed or malformed frame while waiting");
            if (!is_type(payload, length, step->text)) {
                char what[160];
                snprintf(what, sizeof what, "expected %s, relay sent %.*s", step->text,
                         (int)(length < 100 ? length : 100), payload);
                return fail(s, what);
            }
            consume(c, size);
            break;
        }
        case CLOSE:
            if (c->state == READY) {
                /* 1000, as the Python clients close; then wait for the relay to end TCP. */
                if (send_frame(c, 0x8, "\x03\xe8", 2) < 0) return fail(s, "close failed");
                c->state = CLOSING;
                return;
            }
            if (c->state != GONE) return;
            close_conn(c);
            break;
        case LAP: {
            double t = now();
            record(t - s->started);
            s->started = t;
            if (t < deadline) {
                s->step = ROUNDTRIP_LOOP;
                continue;
            }
            break;
        }
        case END:
            if (!roundtrip) record(now() - s->started);
            s->active = 0;
            if (!roundtrip && now() < deadline) start_session(s);
            return;
        }
        s->step++;
        if (roundtrip && s->step == ROUNDTRIP_LOOP) s->started = now();
    }
}

static void start_session(struct session *s) {
    memset(s->conns, 0, sizeof s->conns);
    s->conns[0].fd = s->conns[1].fd = -1;
    s->number = next_number++;
    s->code = (code_base + s->number) % 1000000;
    s->step = 0;
    s->active = 1;
    s->started = s->opened_at = now();
    advance(s);
}

static void on_writable(struct conn *c) {
    int error = 0;
    socklen_t size = sizeof error;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &size);
    if (error) return fail(c->session, "connect refused");
    if (write_all(c, upgrade_request, upgrade_length) < 0) return fail(c->session, "upgrade send");
    c->state = UPGRADING;
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &event);
}

static void on_readable(struct conn *c) {
    struct session *s = c->session;
    if (c->used == READ_BUFFER) return fail(s, "read buffer full");
    ssize_t got = recv(c->fd, c->in + c->used, READ_BUFFER - c->used, 0);
    if (got < 0) {
        if (errno == EAGAIN) return;
        return fail(s, "read error");
    }
    if (got == 0) {
        if (c->state != CLOSING) return fail(s, "the relay closed the socket");
        c->state = GONE;
        return advance(s);
    }
    c->used += got;
    if (c->state == UPGRADING) {
        unsigned char *end = memmem(c->in, c->used, "\r\n\r\n", 4);
        if (end == NULL) return;
        if (c->used < 12 || memcmp(c->in, "HTTP/1.1 101", 12) != 0)
            return fail(s, "upgrade refused");
        consume(c, end + 4 - c->in);
        c->state = READY;
    } else if (c->state == CLOSING) {
        c->used = 0; /* the relay's close frame and anything before it */
        return;
    }
    advance(s);
}

static void expire(struct session *sessions, int count) {
    double t = now();
    for (int i = 0; i < count; i++) {
        struct session *s = &sessions[i];
        double since = roundtrip ? s->started : s->opened_at;
        if (s->active && t - since > SESSION_TIMEOUT_S) fail(s, "timed out");
    }
}

static int active_sessions(struct session *sessions, int count) {
    int active = 0;
    for (int i = 0; i < count; i++) active += sessions[i].active;
    return active;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double percentile(double fraction) {
    if (sample_count == 0) return 0.0;
    long rank = (long)(fraction * sample_count + 0.5);
    if (rank < 1) rank = 1;
    if (rank > sample_count) rank = sample_count;
    return samples[rank - 1];
}

static void fill_data(char *out, size_t size, int characters) {
    int n = snprintf(out, size, "{\"type\":\"data\",\"payload\":\"");
    memset(out + n, roundtrip ? 'x' : 'A', characters);
    snprintf(out + n + characters, size - n - characters, "\"}");
}

static int usage(void) {
    fprintf(stderr,
            "usage: amesh_load pairing|roundtrip --ports P[,P...] [--host 127.0.0.1]\n"
            "       [--concurrency N] [--seconds S] [--code-base N] [--same-instance]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    roundtrip = strcmp(argv[1], "roundtrip") == 0;
    if (!roundtrip && strcmp(argv[1], "pairing") != 0) return usage();
    script = roundtrip ? roundtrip_script : pairing_script;
    const char *host = "127.0.0.1", *ports = NULL;
    int concurrency = 10;
    double seconds = 5.0;
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--same-instance") == 0) { cross = 0; continue; }
        if (value == NULL) return usage();
        i++;
        if (strcmp(arg, "--ports") == 0) ports = value;
        else if (strcmp(arg, "--host") == 0) host = value;
        else if (strcmp(arg, "--concurrency") == 0) concurrency = atoi(value);
        else if (strcmp(arg, "--seconds") == 0) seconds = atof(value);
        else if (strcmp(arg, "--code-base") == 0) code_base = (unsigned)atol(value);
        else return usage();
    }
    if (ports == NULL || concurrency < 1) return usage();
    for (const char *p = ports; *p && port_count < MAX_PORTS; port_count++) {
        struct sockaddr_in *a = &addresses[port_count];
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)atoi(p));
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) return usage();
        p = strchr(p, ',');
        if (p == NULL) { port_count++; break; }
        p++;
    }
    if (port_count == 1) cross = 0;
    upgrade_length = snprintf(upgrade_request, sizeof upgrade_request,
                              "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n", host);
    fill_data(session_data, sizeof session_data, 200);
    fill_data(roundtrip_data, sizeof roundtrip_data, 1024);
    samples = malloc(sizeof(double) * MAX_SAMPLES);
    struct session *sessions = calloc(concurrency, sizeof *sessions);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!samples || !sessions || epfd < 0) return 1;

    double began = now();
    deadline = began + seconds;
    for (int i = 0; i < concurrency; i++) start_session(&sessions[i]);
    struct epoll_event events[MAX_EVENTS];
    double next_expiry = began + 1.0;
    while (active_sessions(sessions, concurrency) > 0) {
        int ready = epoll_wait(epfd, events, MAX_EVENTS, 100);
        for (int i = 0; i < ready; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->fd < 0) continue; /* closed by an earlier event of this batch */
            if (c->state == CONNECTING) {
                if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_writable(c);
            } else if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                on_readable(c);
            }
        }
        double t = now();
        if (t >= next_expiry) {
            expire(sessions, concurrency);
            next_expiry = t + 1.0;
        }
    }
    double wall = now() - began;
    struct rusage usage_;
    getrusage(RUSAGE_SELF, &usage_);
    double cpu = usage_.ru_utime.tv_sec + usage_.ru_utime.tv_usec / 1e6 +
                 usage_.ru_stime.tv_sec + usage_.ru_stime.tv_usec / 1e6;
    qsort(samples, sample_count, sizeof(double), compare);
    printf("{\"mode\":\"%s\",\"completed\":%ld,\"errors\":%ld,\"first_error\":\"", argv[1],
           completed, errors);
    for (const char *p = first_error; *p; p++)
        if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20) putchar(*p);
    printf("\",\"wall_s\":%.4f,\"cpu_s\":%.4f,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"max_ms\":%.4f}\n",
           wall, cpu, 1000 * percentile(0.50), 1000 * percentile(0.99),
           1000 * (sample_count ? samples[sample_count - 1] : 0.0));
    return 0;
}
