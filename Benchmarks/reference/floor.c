/*
 * floor.c — the "C floor" of the Tidings benchmarks: a minimal single-threaded epoll SSE server.
 *
 * It serves the same wire format as Tidings (HTTP/1.1, chunked transfer encoding, the same SSE
 * framing) with the least work possible: no authentication, no storage, no replay, one write()
 * per event per subscriber, TCP_NODELAY on (FLOOR_NAGLE=1 in the environment leaves Nagle on).
 * `tidings bench --spawn-command "floor {port}"` runs it; scripts/bench.sh builds it with cc.
 *
 *   GET  /events[?topic=…]  a stream. With a topic it receives every topic event; its bearer
 *                           token is its user id, which receives that user's events.
 *   POST /events            one event object {"event":…,"topic"|"user":…,"data":…} (data last,
 *                           as tidings bench writes it); answers 202 {"id":"N"}.
 *   GET  /healthz           200.
 *
 * A subscriber whose socket buffer is full (write() would block) is disconnected, like Tidings'
 * slow-consumer rule. Loopback only; it is a measuring stick, not a server.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FDS 65536
#define REQUEST_MAX 16384
#define USER_BUCKETS 65536

enum kind { K_NONE, K_HTTP, K_STREAM };

struct conn {
    enum kind kind;
    int fd;
    size_t len;                 /* bytes buffered in req */
    char *req;                  /* request buffer (HTTP connections) */
    int topic_index;            /* index in topic_subs, or -1 */
    char *user;                 /* bearer token = user id, or NULL */
    struct conn *next_user;     /* hash chain */
};

static struct conn conns[MAX_FDS];
static int *topic_subs;
static int topic_count;
static struct conn *users[USER_BUCKETS];
static uint64_t next_id;
static int nodelay = 1;
static int epfd;

static uint32_t hash(const char *s, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static void close_conn(int fd) {
    struct conn *c = &conns[fd];
    if (c->kind == K_NONE) return;
    if (c->topic_index >= 0) {
        int last = topic_subs[--topic_count];
        topic_subs[c->topic_index] = last;
        conns[last].topic_index = c->topic_index;
    }
    if (c->user) {
        struct conn **p = &users[hash(c->user, strlen(c->user)) % USER_BUCKETS];
        while (*p && *p != c) p = &(*p)->next_user;
        if (*p) *p = c->next_user;
        free(c->user);
    }
    free(c->req);
    memset(c, 0, sizeof *c);
    c->topic_index = -1;
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Sends one framed chunk to a stream: one write(); a full socket buffer disconnects it. */
static void send_stream(int fd, const char *chunk, size_t n) {
    ssize_t w = write(fd, chunk, n);
    if (w != (ssize_t)n) close_conn(fd);
}

static const char *find(const char *hay, size_t n, const char *needle) {
    return memmem(hay, n, needle, strlen(needle));
}

/* The string value after `"key":"`, copied into out (at most cap-1 bytes); length or -1. */
static int string_field(const char *body, size_t n, const char *key, char *out, size_t cap) {
    const char *p = find(body, n, key);
    if (!p) return -1;
    p += strlen(key);
    const char *end = memchr(p, '"', (size_t)(body + n - p));
    if (!end || (size_t)(end - p) >= cap) return -1;
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = 0;
    return (int)(end - p);
}

static void respond(int fd, const char *status, const char *body) {
    char head[512];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     status, strlen(body), body);
    if (write_all(fd, head, (size_t)n) != 0) close_conn(fd);
}

static void publish(int fd, const char *body, size_t n) {
    char type[80], target[160];
    if (string_field(body, n, "\"event\":\"", type, sizeof type) < 0) strcpy(type, "message");
    const char *data = find(body, n, "\"data\":");
    const char *close = body + n;
    while (close > body && *(close - 1) != '}') close--;
    if (!data || close <= data) {
        respond(fd, "422 Unprocessable Content", "{\"title\":\"need event, data and a target\"}");
        return;
    }
    data += 7;
    close--; /* the object's closing brace */
    size_t data_len = (size_t)(close - data);
    uint64_t id = ++next_id;

    /* chunk = size line + frame + CRLF, built once, written to every subscriber */
    size_t frame_max = data_len + strlen(type) + 64;
    char *chunk = malloc(frame_max + 32);
    char *frame = chunk + 16;
    int frame_len = snprintf(frame, frame_max, "id: %llu\nevent: %s\ndata: ", (unsigned long long)id, type);
    memcpy(frame + frame_len, data, data_len);
    frame_len += (int)data_len;
    memcpy(frame + frame_len, "\n\n\r\n", 4);
    frame_len += 2; /* the frame ends with a blank line; CRLF closes the chunk */
    char size_line[16];
    int size_len = snprintf(size_line, sizeof size_line, "%x\r\n", frame_len);
    char *start = frame - size_len;
    memcpy(start, size_line, (size_t)size_len);
    size_t total = (size_t)size_len + (size_t)frame_len + 2;

    if (string_field(body, n, "\"user\":\"", target, sizeof target) >= 0) {
        for (struct conn *c = users[hash(target, strlen(target)) % USER_BUCKETS]; c;) {
            struct conn *next = c->next_user;
            if (strcmp(c->user, target) == 0) send_stream(c->fd, start, total);
            c = next;
        }
    } else {
        for (int i = 0; i < topic_count;) {
            int sub = topic_subs[i];
            send_stream(sub, start, total);
            if (i < topic_count && topic_subs[i] == sub) i++; /* else it was removed: same slot again */
        }
    }
    free(chunk);
    char answer[64];
    snprintf(answer, sizeof answer, "{\"id\":\"%llu\"}", (unsigned long long)id);
    respond(fd, "202 Accepted", answer);
}

static void subscribe(int fd, const char *head, size_t head_len) {
    struct conn *c = &conns[fd];
    const char *line_end = find(head, head_len, "\r\n");
    int wants_topic = line_end && find(head, (size_t)(line_end - head), "topic=") != NULL;
    static const char preamble[] = "retry: 3000\n: tidings\n\n";
    char response[256];
    int n = snprintf(response, sizeof response,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
                     "X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n",
                     sizeof preamble - 1, preamble);
    if (write_all(fd, response, (size_t)n) != 0) {
        close_conn(fd);
        return;
    }
    c->kind = K_STREAM;
    if (wants_topic) {
        c->topic_index = topic_count;
        topic_subs[topic_count++] = fd;
    }
    const char *auth = find(head, head_len, "Authorization: Bearer ");
    if (auth) {
        auth += 22;
        const char *end = find(auth, (size_t)(head + head_len - auth), "\r\n");
        if (end && end > auth) {
            c->user = strndup(auth, (size_t)(end - auth));
            uint32_t b = hash(c->user, strlen(c->user)) % USER_BUCKETS;
            c->next_user = users[b];
            users[b] = c;
        }
    }
    free(c->req); /* head points into it: free it last */
    c->req = NULL;
}

/* Handles every complete request in the buffer (keep-alive). */
static void on_readable(int fd) {
    struct conn *c = &conns[fd];
    if (c->kind == K_STREAM) { /* a stream sends nothing more; EOF closes it */
        char scratch[512];
        ssize_t r = read(fd, scratch, sizeof scratch);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) close_conn(fd);
        return;
    }
    ssize_t r = read(fd, c->req + c->len, REQUEST_MAX - c->len);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
        close_conn(fd);
        return;
    }
    if (r < 0) return;
    c->len += (size_t)r;
    for (;;) {
        const char *end = find(c->req, c->len, "\r\n\r\n");
        if (!end) {
            if (c->len == REQUEST_MAX) close_conn(fd);
            return;
        }
        size_t head_len = (size_t)(end - c->req) + 4;
        size_t body_len = 0;
        const char *cl = find(c->req, head_len, "Content-Length: ");
        if (cl) body_len = strtoul(cl + 16, NULL, 10);
        if (head_len + body_len > REQUEST_MAX) {
            close_conn(fd);
            return;
        }
        if (c->len < head_len + body_len) return;
        if (strncmp(c->req, "POST /events", 12) == 0) {
            publish(fd, c->req + head_len, body_len);
        } else if (strncmp(c->req, "GET /events", 11) == 0) {
            subscribe(fd, c->req, head_len);
            return;
        } else if (strncmp(c->req, "GET /healthz", 12) == 0) {
            respond(fd, "200 OK", "{\"status\":\"ok\"}");
        } else {
            respond(fd, "404 Not Found", "{}");
        }
        if (conns[fd].kind != K_HTTP) return; /* closed while answering */
        memmove(c->req, c->req + head_len + body_len, c->len - head_len - body_len);
        c->len -= head_len + body_len;
    }
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: floor PORT\n");
        return 64;
    }
    signal(SIGPIPE, SIG_IGN);
    if (getenv("FLOOR_NAGLE")) nodelay = 0;
    topic_subs = calloc(MAX_FDS, sizeof(int));
    for (int i = 0; i < MAX_FDS; i++) conns[i].topic_index = -1;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 4096) != 0) {
        perror("floor: bind/listen");
        return 1;
    }
    epfd = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(epfd, EPOLL_CTL_ADD, listener, &ev);
    struct epoll_event events[512];
    for (;;) {
        int n = epoll_wait(epfd, events, 512, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                for (;;) {
                    int client = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
                    if (client < 0) break;
                    if (client >= MAX_FDS) {
                        close(client);
                        continue;
                    }
                    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &nodelay, sizeof nodelay);
                    struct conn *c = &conns[client];
                    c->kind = K_HTTP;
                    c->fd = client;
                    c->len = 0;
                    c->req = malloc(REQUEST_MAX);
                    c->topic_index = -1;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = client};
                    epoll_ctl(epfd, EPOLL_CTL_ADD, client, &cev);
                }
            } else if (events[i].events & (EPOLLERR | EPOLLHUP)) {
                close_conn(fd);
            } else {
                on_readable(fd);
            }
        }
    }
}
