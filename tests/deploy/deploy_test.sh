#!/usr/bin/env bash
# Checks deploy/: the files parse, every tandem flag they use exists, the
# container image installs every library the binary links, and the Slurm
# script's launch logic starts a real two-rank cluster on loopback that serves
# one generation. Usage: deploy_test.sh TANDEM_BINARY REPO_ROOT
set -euo pipefail
tandem=$(readlink -f "$1")
root=$(readlink -f "$2")
deploy=$root/deploy
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }

step "shell scripts parse"
bash -n "$deploy/slurm/tandem-serve.sbatch"

step "systemd unit verifies cleanly"
sed -e "s|/usr/local/bin/tandem|$tandem|" -e "s|^EnvironmentFile=.*|EnvironmentFile=-$work/none|" \
  "$deploy/systemd/tandem.service" > "$work/tandem.service"
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify "$work/tandem.service" 2>&1) || fail "systemd-analyze: $out"
  [ -z "$out" ] || fail "systemd-analyze verify complains: $out"
else
  echo "skipped: systemd-analyze is not installed"
fi

step "every tandem serve flag used in deploy/ exists"
help=$("$tandem" serve --help)
flags=$(python3 - "$deploy" <<'PY'
import re, sys, yaml, pathlib
d = pathlib.Path(sys.argv[1])
texts = [(d / "systemd/tandem.service").read_text(), (d / "systemd/tandem.env.example").read_text(),
         (d / "slurm/tandem-serve.sbatch").read_text()]
docs = list(yaml.safe_load_all((d / "kubernetes/tandem.yaml").read_text()))
kinds = [doc["kind"] for doc in docs]
assert kinds.count("StatefulSet") == 2 and kinds.count("Service") == 2, kinds
config = next(doc for doc in docs if doc["kind"] == "ConfigMap")["data"]
texts.append(config["TANDEM_SERVE_ARGS"])
sets = [doc for doc in docs if doc["kind"] == "StatefulSet"]
for s in sets:
    c = s["spec"]["template"]["spec"]["containers"][0]
    texts.extend(c["args"])
    assert s["spec"]["selector"]["matchLabels"].items() <= s["spec"]["template"]["metadata"]["labels"].items()
workers = next(s for s in sets if s["metadata"]["name"] == "tandem-worker")
assert workers["spec"]["replicas"] == int(config["TANDEM_WORLD_SIZE"]) - 1, "worker replicas"
lines = [l for t in texts for l in t.splitlines()
         if not l.lstrip().startswith("#") and ("serve" in l or "TANDEM_SERVE_ARGS=" in l or l.lstrip().startswith("--"))]
print("\n".join(sorted({f for l in lines for f in re.findall(r"(?<![\w-])--[a-z][a-z-]+", l)})))
PY
)
[ -n "$flags" ] || fail "found no flags"
for f in $flags; do
  case $f in --kill-on-bad-exit|--export) continue ;; esac  # srun's own
  grep -q -- "$f" <<<"$help" || fail "deploy/ uses '$f', which tandem serve does not have"
done
echo "flags: $(echo $flags)"

step "the image installs every library tandem links"
if command -v dpkg >/dev/null; then
  runtime=$(sed -n '/^FROM debian:12-slim/,$p' "$deploy/container/Dockerfile")
  for lib in $(ldd "$tandem" | awk '/=> \// {print $3}'); do
    pkg=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null || true)
    pkg=${pkg%%:*}
    case $pkg in ""|libc6|libgcc-s1|libstdc++6|zlib1g|libudev1) continue ;; esac  # in debian:12-slim
    case $pkg in libasan*|libubsan*|liblsan*|libtsan*) continue ;; esac  # a sanitizer build
    grep -qw -- "$pkg" <<<"$runtime" || fail "tandem links $lib from $pkg, not installed by the image"
  done
fi

step "the Slurm script starts two ranks that serve a generation"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
"$tandem" make-test-model --out "$work/model.gguf" --shape tiny --type q8_0 >/dev/null
head -c 24 /dev/urandom | base64 > "$work/auth-token"
mkdir "$work/bin"
# Slurm is not installed on the build machines: this srun runs the job step's
# tasks on this host, each with its SLURM_PROCID, as srun would on the nodes.
cat > "$work/bin/srun" <<'SH'
#!/usr/bin/env bash
while [[ $1 == --* ]]; do shift; done
tasks=()
for ((i = 0; i < SLURM_NTASKS; i++)); do SLURM_PROCID=$i "$@" & tasks+=($!); done
rc=0
for t in "${tasks[@]}"; do wait "$t" || rc=$?; done
exit $rc
SH
chmod +x "$work/bin/srun"
api_port=$(free_port)
PATH=$work/bin:$PATH SLURM_NTASKS=2 SLURM_JOB_ID=4242 SLURM_JOB_NODELIST=localhost \
  TANDEM_MODEL=$work/model.gguf TANDEM_AUTH_TOKEN_FILE=$work/auth-token TANDEM_BIN=$tandem \
  TANDEM_MASTER_ADDR=127.0.0.1 TANDEM_MASTER_PORT=$(free_port) \
  TANDEM_API_HOST=127.0.0.1 TANDEM_API_PORT=$api_port \
  setsid bash "$deploy/slurm/tandem-serve.sbatch" --max-sequences 2 --context 128 \
  > "$work/job.log" 2>&1 &
job=$!
pids+=("$job")
text=""
for _ in $(seq 1 60); do
  if text=$("$tandem" generate --server "127.0.0.1:$api_port" --auth-token-file "$work/auth-token" \
      --prompt "hello" --max-tokens 4 2>"$work/client.err"); then break; fi
  kill -0 "$job" 2>/dev/null || { cat "$work/job.log"; fail "the job exited before serving"; }
  sleep 0.5
done
grep -q "serving" "$work/job.log" || { cat "$work/job.log" "$work/client.err"; fail "no rank served"; }
grep -q "2 ranks" "$work/job.log" || { cat "$work/job.log"; fail "rank 0 did not serve 2 ranks"; }
echo "generated: $text"

step "SIGTERM to the tasks (scancel) drains and stops both ranks"
pkill -TERM -g "$job" -x tandem
for _ in $(seq 1 60); do kill -0 "$job" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$job" 2>/dev/null; then cat "$work/job.log"; fail "the job is still running 30 s after SIGTERM"; fi
wait "$job" && rc=0 || rc=$?
[ "$rc" = 0 ] || { cat "$work/job.log"; fail "the job exited with $rc after SIGTERM"; }
grep -q "stopped" "$work/job.log" || { cat "$work/job.log"; fail "rank 0 did not say it stopped"; }
echo "PASS"
