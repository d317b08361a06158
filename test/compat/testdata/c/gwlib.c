/*
 * Gearman clients and workers for the compat tests, on Debian's libgearman
 * (libgearman-dev), the C library that PHP's extension, the gearman tool
 * and many other clients wrap. Built by the tests with
 *   cc -o gwlib gwlib.c -lgearman
 *
 * ADDR is HOST:PORT, or several of them separated by commas.
 * Client operations, one per run; each prints its results on stdout, one
 * line each:
 *   gwlib echo ADDR TEXT
 *   gwlib do ADDR FN normal|high|low PAYLOAD [UNIQUE]   rc, result
 *   gwlib bg ADDR FN normal|high|low PAYLOAD [UNIQUE]   rc, handle
 *   gwlib status ADDR HANDLE                            known running num den
 *   gwlib ustatus ADDR UNIQUE                           rc known running num den
 *   gwlib taskstatus ADDR HANDLE...                     one status line each
 *   gwlib tasks ADDR FN N [nonblocking]                 N tasks of mixed priorities
 *                                                       at once, each result checked
 *   gwlib events ADDR FN PAYLOAD [exceptions]           every callback of one task
 *                                                       (exceptions: GEARMAN_CLIENT_EXCEPTION)
 *   gwlib timeout ADDR FN MS PAYLOAD                    a do with a client timeout
 *   gwlib digest ADDR FN BYTES                          sends BYTES, checks the digest
 *   gwlib fetch ADDR FN BYTES                           asks for BYTES, checks them
 *   gwlib mapreduce ADDR SPLITFN FN PAYLOAD             gearman_execute_by_partition
 *   gwlib epoch ADDR FN SECONDS PAYLOAD                 gearman_execute at now+SECONDS
 *   gwlib execute ADDR FN PAYLOAD                       gearman_execute, foreground
 *   gwlib ns ADDR NAMESPACE FN PAYLOAD                  a do within a namespace
 *
 * Worker:
 *   gwlib worker ADDR JOBS [OPTION...] NAME=BEHAVIOUR[:TIMEOUT_S]...
 * runs JOBS jobs (0: until its timeout) and exits. Options: id=ID
 * (gearman_worker_set_identifier), uniq (GEARMAN_WORKER_GRAB_UNIQ),
 * timeout=MS (gearman_worker_set_timeout; reaching it ends the worker with
 * "timeout"), ns=NAMESPACE, reconnect (go on after a lost connection or
 * a timeout).
 * Behaviours:
 *   echo      returns the workload
 *   upper     returns the workload in upper case
 *   uniq      returns "UNIQUE/WORKLOAD"
 *   stream    sends data "d1", status 1/2, warning "w1", data "d2", status
 *             2/2, then returns "done"
 *   fail      returns GEARMAN_FAIL (WORK_FAIL)
 *   exception sends WORK_EXCEPTION "boom", then returns GEARMAN_FAIL
 *   digest    returns "LENGTH:FNV1A" of the workload
 *   bytes     returns as many bytes as the workload's number says
 *   double    returns twice the workload's number
 *   split     (a partition function: needs no other) sends each
 *             space-separated word of the workload to the reducer and
 *             sums the reducer's answers
 *   sleepN    sleeps N seconds, then returns "slept"
 *   hang      prints "holding" and sleeps until killed
 * Each job's function and workload length (after "uniq", and its unique,
 * if it has one) are written to stdout before it runs. (libgearman's
 * client makes up a unique for a job that has none.)
 */
#include <libgearman/gearman.h>

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *err) {
  fprintf(stderr, "%s: %s\n", what, err);
  exit(1);
}

/* client_for makes a client of the servers in addr, HOST:PORT[,HOST:PORT...]. */
static gearman_client_st *client_for(const char *addr) {
  gearman_client_st *c = gearman_client_create(NULL);
  if (c == NULL) die("gearman_client_create", "NULL");
  if (gearman_failed(gearman_client_add_servers(c, addr))) die("add_servers", gearman_client_error(c));
  gearman_client_set_timeout(c, 60000);
  return c;
}

static uint32_t fnv1a(const char *p, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)p[i];
    h *= 16777619u;
  }
  return h;
}

/* pattern fills n bytes with a payload that is not all one byte. */
static char *pattern(size_t n) {
  char *p = malloc(n ? n : 1);
  if (p == NULL) die("malloc", "out of memory");
  for (size_t i = 0; i < n; i++) p[i] = (char)('a' + (i * 7 + i / 251) % 26);
  return p;
}

/* print_bytes prints a result that may hold NULs as "(N bytes)". */
static void print_value(const char *label, const char *v, size_t n) {
  if (v == NULL) {
    printf("%s (null)\n", label);
  } else if (memchr(v, '\0', n) != NULL || n > 200) {
    printf("%s (%zu bytes)\n", label, n);
  } else {
    printf("%s %.*s\n", label, (int)n, v);
  }
}

/* ---- worker ---- */

struct behaviour {
  const char *name;
  int sleep_s;
  int show_unique;
};

/* jobs_run counts the jobs the worker has started. */
static long jobs_run;

static char *dup_result(const char *s, size_t n, size_t *result_size) {
  char *r = malloc(n ? n : 1);
  if (r == NULL) die("malloc", "out of memory");
  memcpy(r, s, n);
  *result_size = n;
  return r;
}

static void *work(gearman_job_st *job, void *context, size_t *result_size, gearman_return_t *ret) {
  const struct behaviour *b = context;
  const char *w = gearman_job_workload(job);
  size_t n = gearman_job_workload_size(job);
  const char *unique = gearman_job_unique(job);
  if (b->show_unique && unique != NULL && unique[0] != '\0') {
    printf("%s %zu %s\n", gearman_job_function_name(job), n, unique);
  } else {
    printf("%s %zu\n", gearman_job_function_name(job), n);
  }
  fflush(stdout);
  jobs_run++;
  *ret = GEARMAN_SUCCESS;
  *result_size = 0;
  char num[64];
  size_t nn = n < sizeof num - 1 ? n : sizeof num - 1;
  memcpy(num, w ? w : "", nn);
  num[nn] = '\0';
  if (strcmp(b->name, "echo") == 0) {
    return dup_result(w, n, result_size);
  } else if (strcmp(b->name, "upper") == 0) {
    char *r = dup_result(w, n, result_size);
    for (size_t i = 0; i < n; i++) r[i] = (char)toupper((unsigned char)r[i]);
    return r;
  } else if (strcmp(b->name, "uniq") == 0) {
    const char *u = gearman_job_unique(job);
    size_t un = strlen(u);
    char *r = malloc(un + 1 + n + 1);
    memcpy(r, u, un);
    r[un] = '/';
    memcpy(r + un + 1, w, n);
    *result_size = un + 1 + n;
    return r;
  } else if (strcmp(b->name, "stream") == 0) {
    if (gearman_failed(gearman_job_send_data(job, "d1", 2)) || gearman_failed(gearman_job_send_status(job, 1, 2)) ||
        gearman_failed(gearman_job_send_warning(job, "w1", 2)) || gearman_failed(gearman_job_send_data(job, "d2", 2)) ||
        gearman_failed(gearman_job_send_status(job, 2, 2))) {
      *ret = GEARMAN_FAIL;
      return NULL;
    }
    return dup_result("done", 4, result_size);
  } else if (strcmp(b->name, "fail") == 0) {
    *ret = GEARMAN_FAIL;
    return NULL;
  } else if (strcmp(b->name, "exception") == 0) {
    gearman_job_send_exception(job, "boom", 4);
    *ret = GEARMAN_FAIL;
    return NULL;
  } else if (strcmp(b->name, "digest") == 0) {
    char r[64];
    int rn = snprintf(r, sizeof r, "%zu:%08" PRIx32, n, fnv1a(w, n));
    return dup_result(r, (size_t)rn, result_size);
  } else if (strcmp(b->name, "bytes") == 0) {
    size_t want = (size_t)strtoull(num, NULL, 10);
    *result_size = want;
    return pattern(want);
  } else if (strcmp(b->name, "double") == 0) {
    char r[64];
    int rn = snprintf(r, sizeof r, "%lld", 2 * strtoll(num, NULL, 10));
    return dup_result(r, (size_t)rn, result_size);
  } else if (strcmp(b->name, "hang") == 0) {
    printf("holding %s\n", gearman_job_handle(job));
    fflush(stdout);
    for (;;) sleep(60);
  } else if (strncmp(b->name, "sleep", 5) == 0) {
    sleep((unsigned)b->sleep_s);
    return dup_result("slept", 5, result_size);
  }
  die("unknown behaviour", b->name);
  return NULL;
}

/* split_work is a partition function: each word it sends with
 * gearman_job_send_data becomes a job of the reducer function. */
static gearman_return_t split_work(gearman_job_st *job, void *context) {
  (void)context;
  const char *w = gearman_job_workload(job);
  size_t n = gearman_job_workload_size(job);
  printf("%s %zu\n", gearman_job_function_name(job), n);
  fflush(stdout);
  jobs_run++;
  size_t start = 0;
  for (size_t i = 0; i <= n; i++) {
    if (i == n || w[i] == ' ') {
      if (i > start && gearman_failed(gearman_job_send_data(job, w + start, i - start))) {
        return gearman_job_send_exception(job, "send_data failed", 16);
      }
      start = i + 1;
    }
  }
  return GEARMAN_SUCCESS;
}

/* sum_aggregate adds up the reducer's answers. */
static gearman_return_t sum_aggregate(gearman_aggregator_st *agg, gearman_task_st *task, gearman_result_st *result) {
  (void)agg;
  long long sum = 0;
  for (; task != NULL; task = gearman_next(task)) {
    gearman_result_st *r = gearman_task_result(task);
    if (r == NULL) return GEARMAN_WORK_EXCEPTION;
    char num[64];
    size_t n = gearman_result_size(r);
    if (n >= sizeof num) return GEARMAN_WORK_EXCEPTION;
    memcpy(num, gearman_result_value(r), n);
    num[n] = '\0';
    sum += strtoll(num, NULL, 10);
  }
  char out[64];
  int on = snprintf(out, sizeof out, "%lld", sum);
  return gearman_result_store_value(result, out, (size_t)on);
}

static int worker_main(int argc, char **argv) {
  if (argc < 4) die("usage", "gwlib worker ADDR JOBS [OPTION...] NAME=BEHAVIOUR...");
  long jobs = atol(argv[3]);
  gearman_worker_st *w = gearman_worker_create(NULL);
  if (w == NULL) die("gearman_worker_create", "NULL");
  if (gearman_failed(gearman_worker_add_servers(w, argv[2]))) die("add_servers", gearman_worker_error(w));
  int reconnect = 0, has_timeout = 0, show_unique = 0;
  for (int i = 4; i < argc; i++) {
    char *a = argv[i];
    char *eq = strchr(a, '=');
    if (strncmp(a, "id=", 3) == 0) {
      if (gearman_failed(gearman_worker_set_identifier(w, a + 3, strlen(a + 3)))) die("set_identifier", gearman_worker_error(w));
    } else if (strcmp(a, "uniq") == 0) {
      gearman_worker_add_options(w, GEARMAN_WORKER_GRAB_UNIQ);
      show_unique = 1;
    } else if (strncmp(a, "timeout=", 8) == 0) {
      gearman_worker_set_timeout(w, atoi(a + 8));
      has_timeout = 1;
    } else if (strncmp(a, "ns=", 3) == 0) {
      gearman_worker_set_namespace(w, a + 3, strlen(a + 3));
    } else if (strcmp(a, "reconnect") == 0) {
      reconnect = 1;
    } else if (eq != NULL) {
      *eq = '\0';
      struct behaviour *b = calloc(1, sizeof *b);
      b->name = eq + 1;
      b->show_unique = show_unique;
      char *colon = strchr(eq + 1, ':');
      uint32_t timeout = 0;
      if (colon != NULL) {
        *colon = '\0';
        timeout = (uint32_t)atoi(colon + 1);
      }
      if (strncmp(b->name, "sleep", 5) == 0) b->sleep_s = atoi(b->name + 5);
      gearman_return_t rc;
      if (strcmp(b->name, "split") == 0) {
        gearman_worker_add_options(w, GEARMAN_WORKER_GRAB_ALL);
        gearman_function_t fn = gearman_function_create_partition(split_work, sum_aggregate);
        rc = gearman_worker_define_function(w, a, strlen(a), fn, timeout, NULL);
      } else {
        rc = gearman_worker_add_function(w, a, timeout, work, b);
      }
      if (gearman_failed(rc)) die("add_function", gearman_worker_error(w));
    } else {
      die("unknown option", a);
    }
  }
  if (!has_timeout) gearman_worker_set_timeout(w, 120000);
  /* A job that ends in an exception takes two calls of
   * gearman_worker_work (GEARMAN_WORK_FAIL, then GEARMAN_SUCCESS): the
   * worker counts the jobs its functions ran, not the calls. */
  while (jobs == 0 || jobs_run < jobs) {
    gearman_return_t rc = gearman_worker_work(w);
    fprintf(stderr, "gearman_worker_work: %s\n", gearman_strerror(rc));
    switch (rc) {
    case GEARMAN_SUCCESS:
    case GEARMAN_WORK_FAIL:
    case GEARMAN_WORK_EXCEPTION:
      break;
    case GEARMAN_TIMEOUT:
      printf("timeout\n");
      fflush(stdout);
      if (reconnect) break;
      gearman_worker_free(w);
      return 0;
    default:
      if (!reconnect) die("gearman_worker_work", gearman_worker_error(w));
      printf("lost %s\n", gearman_strerror(rc));
      fflush(stdout);
      usleep(100000);
    }
  }
  gearman_worker_free(w);
  return 0;
}

/* ---- client ---- */

static const char *rcname(gearman_return_t rc) { return gearman_strerror(rc); }

static int do_job(gearman_client_st *c, const char *fn, const char *prio, const char *payload, const char *unique) {
  size_t n = 0;
  gearman_return_t rc;
  void *r;
  if (strcmp(prio, "high") == 0) {
    r = gearman_client_do_high(c, fn, unique, payload, strlen(payload), &n, &rc);
  } else if (strcmp(prio, "low") == 0) {
    r = gearman_client_do_low(c, fn, unique, payload, strlen(payload), &n, &rc);
  } else {
    r = gearman_client_do(c, fn, unique, payload, strlen(payload), &n, &rc);
  }
  printf("rc %s\n", rcname(rc));
  if (gearman_success(rc)) print_value("result", r, n);
  free(r);
  return 0;
}

static int bg_job(gearman_client_st *c, const char *fn, const char *prio, const char *payload, const char *unique) {
  char handle[GEARMAN_JOB_HANDLE_SIZE];
  gearman_return_t rc;
  if (strcmp(prio, "high") == 0) {
    rc = gearman_client_do_high_background(c, fn, unique, payload, strlen(payload), handle);
  } else if (strcmp(prio, "low") == 0) {
    rc = gearman_client_do_low_background(c, fn, unique, payload, strlen(payload), handle);
  } else {
    rc = gearman_client_do_background(c, fn, unique, payload, strlen(payload), handle);
  }
  printf("rc %s\n", rcname(rc));
  if (gearman_success(rc)) printf("handle %s\n", handle);
  return 0;
}

/* One task's events, in order, as text. */
struct events {
  char buf[4096];
  size_t len;
};

static void add_event(gearman_task_st *task, const char *kind, int with_data) {
  struct events *e = gearman_task_context(task);
  if (e == NULL) return;
  int n;
  if (with_data) {
    n = snprintf(e->buf + e->len, sizeof e->buf - e->len, "%s %.*s\n", kind, (int)gearman_task_data_size(task),
                 (const char *)gearman_task_data(task));
  } else {
    n = snprintf(e->buf + e->len, sizeof e->buf - e->len, "%s\n", kind);
  }
  if (n > 0 && (size_t)n < sizeof e->buf - e->len) e->len += (size_t)n;
}

static gearman_return_t on_created(gearman_task_st *t) {
  add_event(t, "created", 0);
  return GEARMAN_SUCCESS;
}
static gearman_return_t on_data(gearman_task_st *t) {
  add_event(t, "data", 1);
  return GEARMAN_SUCCESS;
}
static gearman_return_t on_warning(gearman_task_st *t) {
  add_event(t, "warning", 1);
  return GEARMAN_SUCCESS;
}
static gearman_return_t on_status(gearman_task_st *t) {
  struct events *e = gearman_task_context(t);
  if (e == NULL) return GEARMAN_SUCCESS;
  int n = snprintf(e->buf + e->len, sizeof e->buf - e->len, "status %" PRIu32 "/%" PRIu32 " known=%d running=%d\n",
                   gearman_task_numerator(t), gearman_task_denominator(t), gearman_task_is_known(t),
                   gearman_task_is_running(t));
  if (n > 0 && (size_t)n < sizeof e->buf - e->len) e->len += (size_t)n;
  return GEARMAN_SUCCESS;
}
static gearman_return_t on_complete(gearman_task_st *t) {
  add_event(t, "complete", 1);
  return GEARMAN_SUCCESS;
}
static gearman_return_t on_exception(gearman_task_st *t) {
  add_event(t, "exception", 1);
  return GEARMAN_SUCCESS;
}
static gearman_return_t on_fail(gearman_task_st *t) {
  add_event(t, "fail", 0);
  return GEARMAN_SUCCESS;
}

static void set_callbacks(gearman_client_st *c) {
  gearman_client_set_created_fn(c, on_created);
  gearman_client_set_data_fn(c, on_data);
  gearman_client_set_warning_fn(c, on_warning);
  gearman_client_set_status_fn(c, on_status);
  gearman_client_set_complete_fn(c, on_complete);
  gearman_client_set_exception_fn(c, on_exception);
  gearman_client_set_fail_fn(c, on_fail);
}

/* run_all runs the client's tasks, waiting on its sockets when it does not
 * block. */
static gearman_return_t run_all(gearman_client_st *c, int nonblocking) {
  for (;;) {
    gearman_return_t rc = gearman_client_run_tasks(c);
    if (nonblocking && (rc == GEARMAN_IO_WAIT || rc == GEARMAN_PAUSE)) {
      rc = gearman_client_wait(c);
      if (gearman_failed(rc)) return rc;
      continue;
    }
    return rc;
  }
}

static int many_tasks(gearman_client_st *c, const char *fn, int n, int nonblocking) {
  if (nonblocking) gearman_client_add_options(c, GEARMAN_CLIENT_NON_BLOCKING);
  set_callbacks(c);
  gearman_client_set_created_fn(c, NULL);
  struct events *ev = calloc((size_t)n, sizeof *ev);
  char **payloads = calloc((size_t)n, sizeof *payloads);
  for (int i = 0; i < n; i++) {
    char p[64];
    snprintf(p, sizeof p, "task-%d", i);
    payloads[i] = strdup(p);
    gearman_return_t rc;
    gearman_task_st *t;
    switch (i % 3) {
    case 0:
      t = gearman_client_add_task(c, NULL, &ev[i], fn, NULL, payloads[i], strlen(payloads[i]), &rc);
      break;
    case 1:
      t = gearman_client_add_task_high(c, NULL, &ev[i], fn, NULL, payloads[i], strlen(payloads[i]), &rc);
      break;
    default:
      t = gearman_client_add_task_low(c, NULL, &ev[i], fn, NULL, payloads[i], strlen(payloads[i]), &rc);
    }
    if (t == NULL) die("add_task", gearman_client_error(c));
  }
  gearman_return_t rc = run_all(c, nonblocking);
  printf("rc %s\n", rcname(rc));
  int ok = 0;
  for (int i = 0; i < n; i++) {
    char want[128];
    snprintf(want, sizeof want, "complete %s\n", payloads[i]);
    for (char *q = want + 9; *q; q++) *q = (char)toupper((unsigned char)*q);
    if (strcmp(ev[i].buf, want) == 0) {
      ok++;
    } else {
      printf("task %d: %s", i, ev[i].len ? ev[i].buf : "(no events)\n");
    }
  }
  printf("ok %d\n", ok);
  return 0;
}

static int task_events(gearman_client_st *c, const char *fn, const char *payload) {
  set_callbacks(c);
  struct events ev = {0};
  gearman_return_t rc;
  if (gearman_client_add_task(c, NULL, &ev, fn, NULL, payload, strlen(payload), &rc) == NULL) die("add_task", gearman_client_error(c));
  rc = gearman_client_run_tasks(c);
  fputs(ev.buf, stdout);
  printf("rc %s\n", rcname(rc));
  return 0;
}

static int task_status(gearman_client_st *c, int n, char **handles) {
  set_callbacks(c);
  gearman_client_set_created_fn(c, NULL);
  struct events *ev = calloc((size_t)n, sizeof *ev);
  for (int i = 0; i < n; i++) {
    gearman_return_t rc;
    if (gearman_client_add_task_status(c, NULL, &ev[i], handles[i], &rc) == NULL) die("add_task_status", gearman_client_error(c));
  }
  gearman_return_t rc = gearman_client_run_tasks(c);
  printf("rc %s\n", rcname(rc));
  for (int i = 0; i < n; i++) fputs(ev[i].len ? ev[i].buf : "(no events)\n", stdout);
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 3) die("usage", "gwlib OPERATION ADDR ...");
  const char *op = argv[1];
  if (strcmp(op, "worker") == 0) return worker_main(argc, argv);
  gearman_client_st *c = client_for(argv[2]);
  int rcode = 0;
  if (strcmp(op, "echo") == 0 && argc == 4) {
    printf("rc %s\n", rcname(gearman_client_echo(c, argv[3], strlen(argv[3]))));
  } else if (strcmp(op, "do") == 0 && argc >= 6) {
    rcode = do_job(c, argv[3], argv[4], argv[5], argc > 6 ? argv[6] : NULL);
  } else if (strcmp(op, "bg") == 0 && argc >= 6) {
    rcode = bg_job(c, argv[3], argv[4], argv[5], argc > 6 ? argv[6] : NULL);
  } else if (strcmp(op, "status") == 0 && argc == 4) {
    bool known = false, running = false;
    uint32_t num = 0, den = 0;
    gearman_return_t rc = gearman_client_job_status(c, argv[3], &known, &running, &num, &den);
    printf("rc %s\n", rcname(rc));
    printf("status %d %d %" PRIu32 " %" PRIu32 "\n", known, running, num, den);
  } else if (strcmp(op, "ustatus") == 0 && argc == 4) {
    gearman_status_t st = gearman_client_unique_status(c, argv[3], strlen(argv[3]));
    printf("rc %s\n", rcname(gearman_status_return(st)));
    printf("status %d %d %" PRIu32 " %" PRIu32 "\n", gearman_status_is_known(st), gearman_status_is_running(st),
           gearman_status_numerator(st), gearman_status_denominator(st));
  } else if (strcmp(op, "taskstatus") == 0 && argc >= 4) {
    rcode = task_status(c, argc - 3, argv + 3);
  } else if (strcmp(op, "tasks") == 0 && argc >= 5) {
    rcode = many_tasks(c, argv[3], atoi(argv[4]), argc > 5 && strcmp(argv[5], "nonblocking") == 0);
  } else if (strcmp(op, "events") == 0 && (argc == 5 || (argc == 6 && strcmp(argv[5], "exceptions") == 0))) {
    if (argc == 6) gearman_client_add_options(c, GEARMAN_CLIENT_EXCEPTION);
    rcode = task_events(c, argv[3], argv[4]);
  } else if (strcmp(op, "timeout") == 0 && argc == 6) {
    gearman_client_set_timeout(c, atoi(argv[4]));
    size_t n = 0;
    gearman_return_t rc;
    void *r = gearman_client_do(c, argv[3], NULL, argv[5], strlen(argv[5]), &n, &rc);
    printf("rc %s\n", rcname(rc));
    free(r);
  } else if (strcmp(op, "digest") == 0 && argc == 5) {
    size_t size = (size_t)strtoull(argv[4], NULL, 10), n = 0;
    char *p = pattern(size);
    gearman_return_t rc;
    char *r = gearman_client_do(c, argv[3], NULL, p, size, &n, &rc);
    printf("rc %s\n", rcname(rc));
    char want[64];
    snprintf(want, sizeof want, "%zu:%08" PRIx32, size, fnv1a(p, size));
    printf("same %d\n", r != NULL && n == strlen(want) && memcmp(r, want, n) == 0);
    print_value("result", r, n);
    free(r);
    free(p);
  } else if (strcmp(op, "fetch") == 0 && argc == 5) {
    size_t size = (size_t)strtoull(argv[4], NULL, 10), n = 0;
    gearman_return_t rc;
    char *r = gearman_client_do(c, argv[3], NULL, argv[4], strlen(argv[4]), &n, &rc);
    printf("rc %s\n", rcname(rc));
    char *p = pattern(size);
    printf("length %zu\n", n);
    printf("same %d\n", r != NULL && n == size && memcmp(r, p, n) == 0);
    free(r);
    free(p);
  } else if (strcmp(op, "mapreduce") == 0 && argc == 6) {
    gearman_argument_t arg = gearman_argument_make(NULL, 0, argv[5], strlen(argv[5]));
    gearman_task_st *t = gearman_execute_by_partition(c, argv[3], strlen(argv[3]), argv[4], strlen(argv[4]), NULL, 0, NULL, &arg, NULL);
    if (t == NULL) die("gearman_execute_by_partition", gearman_client_error(c));
    printf("rc %s\n", rcname(gearman_task_return(t)));
    gearman_result_st *r = gearman_task_result(t);
    if (r != NULL) print_value("result", gearman_result_value(r), gearman_result_size(r));
  } else if ((strcmp(op, "epoch") == 0 && argc == 6) || (strcmp(op, "execute") == 0 && argc == 5)) {
    int epoch = strcmp(op, "epoch") == 0;
    const char *payload = argv[epoch ? 5 : 4];
    gearman_task_attr_t attr = epoch ? gearman_task_attr_init_epoch(time(NULL) + atoi(argv[4]), GEARMAN_JOB_PRIORITY_NORMAL)
                                     : gearman_task_attr_init(GEARMAN_JOB_PRIORITY_NORMAL);
    gearman_argument_t arg = gearman_argument_make(NULL, 0, payload, strlen(payload));
    gearman_task_st *t = gearman_execute(c, argv[3], strlen(argv[3]), NULL, 0, &attr, &arg, NULL);
    if (t == NULL) die("gearman_execute", gearman_client_error(c));
    printf("rc %s\n", rcname(gearman_task_return(t)));
    if (epoch) {
      printf("handle %s\n", gearman_task_job_handle(t));
    } else {
      gearman_result_st *r = gearman_task_result(t);
      if (r != NULL) print_value("result", gearman_result_value(r), gearman_result_size(r));
    }
  } else if (strcmp(op, "ns") == 0 && argc == 6) {
    gearman_client_set_namespace(c, argv[3], strlen(argv[3]));
    rcode = do_job(c, argv[4], "normal", argv[5], NULL);
  } else {
    die("usage", "unknown operation or wrong arguments");
  }
  gearman_client_free(c);
  return rcode;
}
