# Summary of bench/rest.sh: reads the `round=... call=... target=...` lines of rest.txt and
# prints, per call, the median [min..max] of req/s and p99 for Fluxbase and the reference,
# the ratios against the targets, the server's and Postgres' CPU per request (µs, Fluxbase /
# reference; postgres_cpu_s is absent from runs before 2026-12-06) and any wrk errors.
#
#   awk -f bench/rest_summary.awk bench/results/<date>/rest.txt
#
# A call with non-2xx responses or socket errors/timeouts in any of its runs is INVALID.
function med(arr, n,   i, j, t) {
  for (i = 2; i <= n; i++) { t = arr[i]; for (j = i - 1; j >= 1 && arr[j] > t; j--) arr[j + 1] = arr[j]; arr[j + 1] = t }
  lo = arr[1]; hi = arr[n]
  return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
BEGIN {
  split("single=0.75 list=0.75 embed=0.70 insert=0.75 rpc=0.75 health=0.70", tl, " ")
  for (i in tl) { split(tl[i], kv, "="); tgt[kv[1]] = kv[2] }
}
/^round=/ {
  delete f
  for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
  k = f["call"] SUBSEP f["target"]; n[k]++
  rps[k, n[k]] = f["rps"] + 0; p99[k, n[k]] = f["p99_ms"] + 0
  cpu[k, n[k]] = (f["requests"] > 0) ? f["server_cpu_s"] * 1e6 / f["requests"] : 0
  pgc[k, n[k]] = (f["requests"] > 0) ? f["postgres_cpu_s"] * 1e6 / f["requests"] : 0
  non2xx[k] += f["non2xx"]; sock[k] += f["socket_errors"]; tmo[k] += f["timeouts"]
  if (!(f["call"] in seen)) { seen[f["call"]] = 1; order[++nc] = f["call"]; rounds = 0 }
  if (f["round"] + 0 > rounds) rounds = f["round"] + 0
}
END {
  printf "# summary: median [min..max] over %d rounds; ratio = Fluxbase median / reference median\n", rounds
  printf "# targets: req/s ratio >= 0.75 (single, list, insert, rpc), >= 0.70 (embed, health); p99 <= 1.5x reference\n"
  printf "%-7s %-24s %-24s %5s %5s  %-24s %-24s %5s  %-9s %-9s %s\n", "call", "fluxbase req/s", "reference req/s", "ratio", "tgt",
    "fluxbase p99 ms", "reference p99 ms", "p99x", "cpu us/rq", "pg us/rq", "verdict"
  for (c = 1; c <= nc; c++) {
    call = order[c]
    for (t = 1; t <= 2; t++) {
      tg = (t == 1) ? "fluxbase" : "ref"; k = call SUBSEP tg; m = n[k]
      delete a; for (i = 1; i <= m; i++) a[i] = rps[k, i]
      R[t] = med(a, m); RL[t] = lo; RH[t] = hi
      delete a; for (i = 1; i <= m; i++) a[i] = p99[k, i]
      P[t] = med(a, m); PL[t] = lo; PH[t] = hi
      delete a; for (i = 1; i <= m; i++) a[i] = cpu[k, i]
      C[t] = med(a, m)
      delete a; for (i = 1; i <= m; i++) a[i] = pgc[k, i]
      G[t] = med(a, m)
      E[t] = ""
      if (non2xx[k] > 0) E[t] = E[t] sprintf(" %d non-2xx", non2xx[k])
      if (sock[k] > 0) E[t] = E[t] sprintf(" %d socket errors", sock[k])
      if (tmo[k] > 0) E[t] = E[t] sprintf(" %d timeouts", tmo[k])
    }
    ratio = (R[2] > 0) ? R[1] / R[2] : 0
    px = (P[2] > 0) ? P[1] / P[2] : 0
    verdict = (ratio >= tgt[call] ? "req/s ok" : "req/s BELOW") ", " (px <= 1.5 ? "p99 ok" : "p99 ABOVE")
    if (E[1] != "" || E[2] != "") {
      verdict = "INVALID (" (E[1] != "" ? "fluxbase:" E[1] : "") (E[1] != "" && E[2] != "" ? "; " : "") \
        (E[2] != "" ? "reference:" E[2] : "") "); " verdict
    }
    printf "%-7s %-24s %-24s %5.2f %5.2f  %-24s %-24s %5.2f  %-9s %-9s %s\n", call,
      sprintf("%.0f [%.0f..%.0f]", R[1], RL[1], RH[1]), sprintf("%.0f [%.0f..%.0f]", R[2], RL[2], RH[2]),
      ratio, tgt[call],
      sprintf("%.2f [%.2f..%.2f]", P[1], PL[1], PH[1]), sprintf("%.2f [%.2f..%.2f]", P[2], PL[2], PH[2]),
      px, sprintf("%.0f/%.0f", C[1], C[2]), sprintf("%.0f/%.0f", G[1], G[2]), verdict
    spread[c] = sprintf("%-7s req/s spread (max-min)/median: fluxbase %4.1f%%, reference %4.1f%%", call,
      R[1] > 0 ? 100 * (RH[1] - RL[1]) / R[1] : 0, R[2] > 0 ? 100 * (RH[2] - RL[2]) / R[2] : 0)
  }
  print ""
  for (c = 1; c <= nc; c++) print spread[c]
  print ""
  print "cpu us/rq: CPU time of the server process alone (fluxbase / ref_server; Postgres and wrk"
  print "excluded) per completed request. p99 is measured closed-loop at saturation (50 connections,"
  print "2 cores shared by wrk, both servers' Postgres backends and anything else running)."
}
