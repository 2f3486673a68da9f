// The Gloo baseline for `ringsam bench allreduce`, in C++ against Debian's libgloo-dev: every
// all-reduce algorithm Gloo ships, over its TCP transport, N local processes, with the same rules
// as ringsam's bench (one warm-up, a one-value all-reduce as a barrier before each timed
// operation, the mean of the timed operations, busbw = algbw * 2(n-1)/n, every result checked
// exactly) and the same CPU measure (each rank's process CPU time, user + sys of all its threads,
// over the timed operations only, summed over the ranks).
//
// Built and run by benches/allreduce_vs_gloo.py; by hand:
//     g++ -O2 -std=c++17 benches/gloo_allreduce.cc -o gloo_allreduce -lgloo -lpthread
//     ./gloo_allreduce --nproc 4 --bytes 67108864 --iters 10
// Prints one JSON object per algorithm, with the fields of ringsam's `bench allreduce --json`.

#include <gloo/allreduce_bcube.h>
#include <gloo/allreduce_halving_doubling.h>
#include <gloo/allreduce_ring.h>
#include <gloo/allreduce_ring_chunked.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/transport/tcp/device.h>

#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace {

const char* kAlgorithms[] = {"ring-chunked", "ring", "halving-doubling", "bcube"};
constexpr int kNumAlgorithms = sizeof(kAlgorithms) / sizeof(kAlgorithms[0]);

double process_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// One rank's figures for one algorithm, sent to the parent through a pipe.
struct RankResult {
  double seconds;  // mean wall time per timed operation
  double cpu;      // mean process CPU time per timed operation
  int ok;  // 1: every result exact; 0: some wrong; -1: not run
};

// An all-reduce of `data` (count floats) with algorithm `a`, built once and run many times, as
// torch.distributed keeps its algorithm objects.
std::function<void()> make_allreduce(int a, const std::shared_ptr<gloo::Context>& ctx, float* data, int count) {
  std::vector<float*> ptrs{data};
  switch (a) {
    case 0: {
      auto alg = std::make_shared<gloo::AllreduceRingChunked<float>>(ctx, ptrs, count);
      return [alg] { alg->run(); };
    }
    case 1: {
      auto alg = std::make_shared<gloo::AllreduceRing<float>>(ctx, ptrs, count);
      return [alg] { alg->run(); };
    }
    case 2: {
      auto alg = std::make_shared<gloo::AllreduceHalvingDoubling<float>>(ctx, ptrs, count);
      return [alg] { alg->run(); };
    }
    default: {
      auto alg = std::make_shared<gloo::AllreduceBcube<float>>(ctx, ptrs, count);
      return [alg] { alg->run(); };
    }
  }
}

RankResult run_algorithm(int a, const std::shared_ptr<gloo::Context>& ctx, int rank, int world, int count, int iters) {
  const float total = world * (world + 1) / 2.0f;
  std::vector<float> pattern(count), expected(count), buf(count);
  for (int i = 0; i < count; i++) {
    pattern[i] = float((rank + 1) * (i % 13));
    expected[i] = total * float(i % 13);
  }
  float one = 0.0f;
  auto barrier = make_allreduce(1, ctx, &one, 1);
  auto allreduce = make_allreduce(a, ctx, buf.data(), count);
  buf = pattern;
  allreduce();  // warm-up
  bool ok = std::memcmp(buf.data(), expected.data(), count * sizeof(float)) == 0;
  double wall = 0.0, cpu = 0.0;
  for (int it = 0; it < iters; it++) {
    std::memcpy(buf.data(), pattern.data(), count * sizeof(float));
    barrier();
    double t0 = wall_seconds(), c0 = process_cpu_seconds();
    allreduce();
    cpu += process_cpu_seconds() - c0;
    wall += wall_seconds() - t0;
    ok = ok && std::memcmp(buf.data(), expected.data(), count * sizeof(float)) == 0;
  }
  return RankResult{wall / iters, cpu / iters, ok ? 1 : 0};
}

void write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w <= 0) _exit(3);
    c += w;
    n -= size_t(w);
  }
}

// One rank: rendezvous through the shared directory, then every algorithm in turn.
int rank_main(int rank, int world, const std::string& dir, int count, int iters, int fd) {
  gloo::transport::tcp::attr attr("127.0.0.1");
  auto dev = gloo::transport::tcp::CreateDevice(attr);
  gloo::rendezvous::FileStore store(dir);
  auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, world);
  ctx->connectFullMesh(store, dev);
  for (int a = 0; a < kNumAlgorithms; a++) {
    // Bcube groups ranks by a base of 2: with other world sizes it is skipped (ok = -1).
    bool bcube_fits = (world & (world - 1)) == 0;
    RankResult r = (a == 3 && !bcube_fits) ? RankResult{0.0, 0.0, -1} : run_algorithm(a, ctx, rank, world, count, iters);
    write_all(fd, &r, sizeof r);
  }
  return 0;
}

int read_all(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    ssize_t got = read(fd, c, n);
    if (got <= 0) return -1;
    c += got;
    n -= size_t(got);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int world = 4, iters = 10;
  long bytes = 64L << 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--nproc") world = std::atoi(argv[i + 1]);
    else if (flag == "--bytes") bytes = std::atol(argv[i + 1]);
    else if (flag == "--iters") iters = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown flag %s (expected --nproc, --bytes, --iters)\n", argv[i]);
      return 2;
    }
  }
  if (world < 2 || iters < 1 || bytes < 4 || bytes / 4 > (1L << 30)) {
    std::fprintf(stderr, "need --nproc >= 2, --iters >= 1, 4 <= --bytes <= 4 GiB\n");
    return 2;
  }
  int count = int(bytes / 4);
  char tmpl[] = "/tmp/gloo-allreduce-XXXXXX";
  if (!mkdtemp(tmpl)) {
    std::perror("mkdtemp");
    return 1;
  }
  std::vector<int> fds(world);
  std::vector<pid_t> pids(world);
  for (int r = 0; r < world; r++) {
    int p[2];
    if (pipe(p) != 0) return 1;
    pid_t pid = fork();
    if (pid == 0) {
      close(p[0]);
      _exit(rank_main(r, world, tmpl, count, iters, p[1]));
    }
    close(p[1]);
    fds[r] = p[0];
    pids[r] = pid;
  }
  std::vector<std::vector<RankResult>> results(world, std::vector<RankResult>(kNumAlgorithms));
  int failed = 0;
  for (int r = 0; r < world; r++) {
    failed |= read_all(fds[r], results[r].data(), sizeof(RankResult) * kNumAlgorithms);
    int status = 0;
    waitpid(pids[r], &status, 0);
    failed |= !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  std::string rm = std::string("rm -rf ") + tmpl;
  if (std::system(rm.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", tmpl);
  if (failed) {
    std::fprintf(stderr, "a rank failed\n");
    return 1;
  }
  for (int a = 0; a < kNumAlgorithms; a++) {
    if (results[0][a].ok < 0) continue;
    double cpu = 0.0;
    bool ok = true;
    for (int r = 0; r < world; r++) {
      cpu += results[r][a].cpu;
      ok = ok && results[r][a].ok;
    }
    double t = results[0][a].seconds;
    double algbw = bytes / t / 1e9;
    std::printf(
        "{\"transport\":\"gloo-%s\",\"nproc\":%d,\"bytes\":%ld,\"count\":%d,\"time_us\":%.1f,\"algbw_gbs\":%.4f,"
        "\"busbw_gbs\":%.4f,\"ok\":%s,\"cpu_s\":%.6f,\"cpu_ranks\":%d}\n",
        kAlgorithms[a], world, bytes, count, t * 1e6, algbw, algbw * 2.0 * (world - 1) / world, ok ? "true" : "false", cpu,
        world);
  }
  return 0;
}
