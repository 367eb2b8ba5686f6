;; lmpipe's own WebAssembly SIMD kernels for the wasm backend, where TF.js's are single-threaded and
;; slow on what a training step spends most on besides matMuls (bench/RESULTS.md):
;;   softmax_rows  the loss's vocabulary softmax: TF.js runs Max, Sub, Exp and Sum over [rows, 50304]
;;   adamw         one parameter's AdamW update: ~15 TF.js kernels, one pass here
;;   tanh          GELU's tanh: TF.js's scalar tanh costs ~14 ns a value
;;   layernorm_*   LayerNorm forward and backward: ~30 TF.js kernels a layer, two passes a row here
;;   imgnorm_*     the image models' per-image norm + channel affine + ReLU, one job each way
;;   gelu_*        GELU's elementwise parts around tanh, in the op chain's order (bit-identical to it)
;;   im2col, col2im the gathers and scatter-adds of the conv gradients (lib/tensor/ops/conv2d/wasm.ts)
;;   gemv_*        matrix-vector products of a cached decoding step (lib/tensor/ops/gemv/wasm.ts): the
;;                 linears, attention against the key/value cache and the output head
;;   block_max     the maxima of blocks of 16 logits, where the sampler's top-k search starts
;;   q16_head, gemv_bound_q16  the decoding step's 16-bit integer head and its bounds on the logits
;;   sum_squares   float64 partial sums of squares (the gradient norm)
;;   cumsum        running sums along an axis where it lies (TF.js transposes it last first)
;;   causal_softmax, softmax_grad  attention's masked softmax and its gradient, a row at a time
;;   erf, gelu_erf_grad_out  exact GELU's erf and its gradient (gelu_out gives its forward)
;;   col_sums      float64 column sums (bias gradients: TF.js's Sum transposes first)
;;   image_means   per-image channel means (the CNNs' global average pool)
;;   add_rows      a + b, same shape or b a row added to each row (TF.js's Add runs on one thread)
;;   copy_runs     strided copies of contiguous runs: transposes that keep the last axis, concat, split
;;   gather_rows   rows of a table at int32 indices (the embedding lookup)
;; Each works on a range (rows or elements) so that lib/tensor/wasm/kernels.ts can share a call out
;; between threads, and on TF.js's own heap (the memory is imported): nothing is copied.
;;
;; Built into lib/tensor/wasm/kernels_bytes.ts by scripts/build_wasm.ts (twice: with a shared memory
;; import for the threaded wasm build, without for the single-threaded one). Constants are set into
;; locals before the loops: V8 rebuilds a v128.const at every use.
(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; For rows r0 <= row < r1 of x [rows, cols] (float32, row-major, byte offsets into the memory):
  ;; m[row] = max of the row, s[row] = sum of exp(x[row, :] - m[row]) and, when $store is 1,
  ;; e[row, :] = those exponentials (e may be x). With $store 0 e is not touched: evaluation's loss
  ;; needs only m and s (lib/loss.ts), and skipping the [rows, cols] write saves its memory traffic.
  ;; The sum is taken in float32 vectors over blocks of 256 values and in float64 across blocks.
  ;;
  ;; exp(t), t = x - max <= 0 (or NaN), to ~1 ulp: t = k ln2 + r with |r| <= ln2/2 (ln2 split in two
  ;; so that k ln2_hi and t - k ln2_hi are exact), e^r = 1 + r Q(r) with Q of degree 5, Q(0) = 1
  ;; (fitted for the least largest relative error on that range, 2e-9 before float32 rounding; Horner's
  ;; rule, 6 multiply-adds), 2^k built in the exponent bits. k is rounded by adding 1.5 * 2^23 (the float's low bits then hold k). t is first
  ;; clamped at -88: there k = -127, whose exponent bits (k + 127) are all zero, so the result is
  ;; exactly 0 (true values are below 2^-126.5 there, denormals, and -Infinity's is 0); between that
  ;; and ln(FLT_MIN) the product makes the denormal. pmax keeps a NaN t, which stays NaN throughout.
  ;; The multiply-adds are relaxed SIMD's f32x4.relaxed_madd: one fused instruction where the CPU has
  ;; FMA, a multiply and an add elsewhere. scripts/build_wasm.ts also writes the module with them as a
  ;; multiply and an add, for runtimes without relaxed SIMD (lib/tensor/wasm/kernels.ts picks).
  (func $softmax_rows (export "softmax_rows")
    (param $x i32) (param $e i32) (param $m i32) (param $s i32)
    (param $r0 i32) (param $r1 i32) (param $cols i32) (param $store i32)
    (local $row i32) (local $p i32) (local $q i32) (local $end i32) (local $vend i32) (local $bend i32)
    (local $left i32)
    (local $mx v128) (local $mx2 v128) (local $max f32) (local $next f32) (local $dn i32) (local $stop i32)
    (local $vmax v128)
    (local $t v128) (local $kb v128) (local $r v128) (local $y v128)
    (local $t2 v128) (local $kb2 v128) (local $r2 v128) (local $y2 v128)
    (local $acc v128) (local $acc2 v128) (local $sum v128)
    (local $min_t v128) (local $log2e v128) (local $round v128) (local $nln2_hi v128) (local $nln2_lo v128)
    (local $q1 v128) (local $q2 v128) (local $q3 v128) (local $q4 v128) (local $q5 v128)
    (local $one v128) (local $bias v128) (local $lane v128) (local $ninf v128)
    (local.set $min_t (v128.const f32x4 -88 -88 -88 -88))
    (local.set $log2e (v128.const f32x4 1.44269504 1.44269504 1.44269504 1.44269504))
    (local.set $round (v128.const f32x4 12582912 12582912 12582912 12582912))
    (local.set $nln2_hi (v128.const f32x4 -0.693359375 -0.693359375 -0.693359375 -0.693359375))
    (local.set $nln2_lo (v128.const f32x4 2.12194440e-4 2.12194440e-4 2.12194440e-4 2.12194440e-4))
    (local.set $q1 (v128.const f32x4 0.49999994 0.49999994 0.49999994 0.49999994))
    (local.set $q2 (v128.const f32x4 0.16666432 0.16666432 0.16666432 0.16666432))
    (local.set $q3 (v128.const f32x4 0.041668 0.041668 0.041668 0.041668))
    (local.set $q4 (v128.const f32x4 0.00837417 0.00837417 0.00837417 0.00837417))
    (local.set $q5 (v128.const f32x4 0.0013843622 0.0013843622 0.0013843622 0.0013843622))
    (local.set $one (v128.const f32x4 1 1 1 1))
    (local.set $bias (v128.const i32x4 127 127 127 127))
    (local.set $lane (v128.const i32x4 0 1 2 3))
    (local.set $ninf (v128.const f32x4 -inf -inf -inf -inf))

    (local.set $row (local.get $r0))
    (if (i32.lt_u (local.get $row) (local.get $r1))
      (then (local.set $next (call $row_max
        (i32.add (local.get $x) (i32.shl (i32.mul (local.get $row) (local.get $cols)) (i32.const 2)))
        (local.get $cols)))))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $r1)))
        ;; this row is [p, end) in x; its first 4 * floor(cols / 4) values end at vend
        (local.set $p (i32.add (local.get $x) (i32.shl (i32.mul (local.get $row) (local.get $cols)) (i32.const 2))))
        (local.set $end (i32.add (local.get $p) (i32.shl (local.get $cols) (i32.const 2))))
        (local.set $vend (i32.add (local.get $p)
          (i32.shl (i32.and (local.get $cols) (i32.const -4)) (i32.const 2))))

        ;; e = exp(x - max) and its sum: whole blocks of 256 values two vectors a step, then the rest
        ;; of the row a vector at a time, where the last 1-3 values of a row whose length is not a
        ;; multiple of 4 go through as one vector padded with zeros after exp. The row's maximum was
        ;; found before; the next row's is taken in the same loops, dn bytes further on (0 for the
        ;; range's last row, which then rereads its own values): its reads from memory overlap the
        ;; exp's arithmetic instead of a pass of their own. The maximum does not depend on the order.
        (local.set $max (local.get $next))
        (local.set $dn (select (i32.shl (local.get $cols) (i32.const 2)) (i32.const 0)
          (i32.lt_u (i32.add (local.get $row) (i32.const 1)) (local.get $r1))))
        (local.set $mx (local.get $ninf))
        (local.set $mx2 (local.get $ninf))
        (local.set $vmax (f32x4.splat (local.get $max)))
        (local.set $q (i32.add (local.get $e) (i32.sub (local.get $p) (local.get $x))))
        (local.set $sum (v128.const f64x2 0 0))
        (block $blocks_done
          (loop $blocks
            (local.set $bend (i32.add (local.get $p) (i32.const 1024)))
            (br_if $blocks_done (i32.gt_u (local.get $bend) (local.get $vend)))
            (local.set $acc (v128.const f32x4 0 0 0 0))
            (local.set $acc2 (v128.const f32x4 0 0 0 0))
            (loop $pairs
              ;; exp of two vectors, as described above the function, interleaved
              (local.set $mx (f32x4.pmax (local.get $mx) (v128.load (i32.add (local.get $p) (local.get $dn)))))
              (local.set $mx2
                (f32x4.pmax (local.get $mx2) (v128.load offset=16 (i32.add (local.get $p) (local.get $dn)))))
              (local.set $t (f32x4.pmax (f32x4.sub (v128.load (local.get $p)) (local.get $vmax)) (local.get $min_t)))
              (local.set $t2 (f32x4.pmax
                (f32x4.sub (v128.load offset=16 (local.get $p)) (local.get $vmax)) (local.get $min_t)))
              (local.set $kb (f32x4.relaxed_madd (local.get $t) (local.get $log2e) (local.get $round)))
              (local.set $kb2 (f32x4.relaxed_madd (local.get $t2) (local.get $log2e) (local.get $round)))
              (local.set $y (f32x4.sub (local.get $kb) (local.get $round)))
              (local.set $y2 (f32x4.sub (local.get $kb2) (local.get $round)))
              (local.set $r (f32x4.relaxed_madd (local.get $y) (local.get $nln2_hi) (local.get $t)))
              (local.set $r2 (f32x4.relaxed_madd (local.get $y2) (local.get $nln2_hi) (local.get $t2)))
              (local.set $r (f32x4.relaxed_madd (local.get $y) (local.get $nln2_lo) (local.get $r)))
              (local.set $r2 (f32x4.relaxed_madd (local.get $y2) (local.get $nln2_lo) (local.get $r2)))
              (local.set $y (f32x4.relaxed_madd (local.get $q5) (local.get $r) (local.get $q4)))
              (local.set $y2 (f32x4.relaxed_madd (local.get $q5) (local.get $r2) (local.get $q4)))
              (local.set $y (f32x4.relaxed_madd (local.get $y) (local.get $r) (local.get $q3)))
              (local.set $y2 (f32x4.relaxed_madd (local.get $y2) (local.get $r2) (local.get $q3)))
              (local.set $y (f32x4.relaxed_madd (local.get $y) (local.get $r) (local.get $q2)))
              (local.set $y2 (f32x4.relaxed_madd (local.get $y2) (local.get $r2) (local.get $q2)))
              (local.set $y (f32x4.relaxed_madd (local.get $y) (local.get $r) (local.get $q1)))
              (local.set $y2 (f32x4.relaxed_madd (local.get $y2) (local.get $r2) (local.get $q1)))
              (local.set $y (f32x4.relaxed_madd (local.get $y) (local.get $r) (local.get $one)))
              (local.set $y2 (f32x4.relaxed_madd (local.get $y2) (local.get $r2) (local.get $one)))
              (local.set $y (f32x4.relaxed_madd (local.get $y) (local.get $r) (local.get $one)))
              (local.set $y2 (f32x4.relaxed_madd (local.get $y2) (local.get $r2) (local.get $one)))
              ;; times 2^k: kb's bits are those of 1.5 * 2^23 plus k; adding 127 and shifting left by 23
              ;; drops the former and leaves (k + 127) << 23, the float 2^k (0 for k = -127)
              (local.set $y (f32x4.mul (local.get $y)
                (i32x4.shl (i32x4.add (local.get $kb) (local.get $bias)) (i32.const 23))))
              (local.set $y2 (f32x4.mul (local.get $y2)
                (i32x4.shl (i32x4.add (local.get $kb2) (local.get $bias)) (i32.const 23))))
              (if (local.get $store)
                (then
                  (v128.store (local.get $q) (local.get $y))
                  (v128.store offset=16 (local.get $q) (local.get $y2))))
              (local.set $acc (f32x4.add (local.get $acc) (local.get $y)))
              (local.set $acc2 (f32x4.add (local.get $acc2) (local.get $y2)))
              (local.set $p (i32.add (local.get $p) (i32.const 32)))
              (local.set $q (i32.add (local.get $q) (i32.const 32)))
              (br_if $pairs (i32.lt_u (local.get $p) (local.get $bend))))
            (local.set $acc (f32x4.add (local.get $acc) (local.get $acc2)))
            (local.set $sum (f64x2.add (local.get $sum) (f64x2.add
              (f64x2.promote_low_f32x4 (local.get $acc))
              (f64x2.promote_low_f32x4
                (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $acc) (local.get $acc))))))
            (br $blocks)))
        (local.set $stop (local.get $p))
        (local.set $acc (v128.const f32x4 0 0 0 0))
        (block $rest_done
          (loop $rest
            (br_if $rest_done (i32.ge_u (local.get $p) (local.get $end)))
            ;; values left in the row, in bytes (>= 16: a whole vector)
            (local.set $left (i32.sub (local.get $end) (local.get $p)))
            (if (i32.ge_u (local.get $left) (i32.const 16))
              (then (local.set $t (v128.load (local.get $p))))
              (else
                (local.set $t (v128.load32_lane 0 (local.get $p) (local.get $ninf)))
                (if (i32.ge_u (local.get $left) (i32.const 8))
                  (then (local.set $t (v128.load32_lane offset=4 1 (local.get $p) (local.get $t)))))
                (if (i32.ge_u (local.get $left) (i32.const 12))
                  (then (local.set $t (v128.load32_lane offset=8 2 (local.get $p) (local.get $t)))))))
            (local.set $t (f32x4.pmax (f32x4.sub (local.get $t) (local.get $vmax)) (local.get $min_t)))
            (local.set $kb (f32x4.relaxed_madd (local.get $t) (local.get $log2e) (local.get $round)))
            (local.set $y (f32x4.sub (local.get $kb) (local.get $round)))
            (local.set $r (f32x4.relaxed_madd (local.get $y) (local.get $nln2_hi) (local.get $t)))
            (local.set $r (f32x4.relaxed_madd (local.get $y) (local.get $nln2_lo) (local.get $r)))
            (local.set $y (f32x4.relaxed_madd (local.get $q5) (local.get $r) (local.get $q4)))
            (local.set $y (f32x4.relaxed_madd (local.get $y) (local.get $r) (local.get $q3)))
            (local.set $y (f32x4.relaxed_madd (local.get $y) (local.get $r) (local.get $q2)))
            (local.set $y (f32x4.relaxed_madd (local.get $y) (local.get $r) (local.get $q1)))
            (local.set $y (f32x4.relaxed_madd (local.get $y) (local.get $r) (local.get $one)))
            (local.set $y (f32x4.relaxed_madd (local.get $y) (local.get $r) (local.get $one)))
            (local.set $y (f32x4.mul (local.get $y)
              (i32x4.shl (i32x4.add (local.get $kb) (local.get $bias)) (i32.const 23))))
            (if (i32.ge_u (local.get $left) (i32.const 16))
              (then
                (if (local.get $store) (then (v128.store (local.get $q) (local.get $y)))))
              (else
                ;; keep only the lanes that hold values of this row
                (local.set $y (v128.and (local.get $y)
                  (i32x4.lt_s (local.get $lane) (i32x4.splat (i32.shr_u (local.get $left) (i32.const 2))))))
                (if (local.get $store)
                  (then
                    (v128.store32_lane 0 (local.get $q) (local.get $y))
                    (if (i32.ge_u (local.get $left) (i32.const 8))
                      (then (v128.store32_lane offset=4 1 (local.get $q) (local.get $y))))
                    (if (i32.ge_u (local.get $left) (i32.const 12))
                      (then (v128.store32_lane offset=8 2 (local.get $q) (local.get $y))))))))
            (local.set $acc (f32x4.add (local.get $acc) (local.get $y)))
            (local.set $p (i32.add (local.get $p) (i32.const 16)))
            (local.set $q (i32.add (local.get $q) (i32.const 16)))
            (br $rest)))
        (local.set $sum (f64x2.add (local.get $sum) (f64x2.add
          (f64x2.promote_low_f32x4 (local.get $acc))
          (f64x2.promote_low_f32x4
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $acc) (local.get $acc))))))

        ;; the next row's maximum: its values up to stop (+ dn) went through the loop above
        (if (local.get $dn)
          (then
            (local.set $mx (f32x4.pmax (local.get $mx) (local.get $mx2)))
            (local.set $next (f32.max
              (f32.max (f32x4.extract_lane 0 (local.get $mx)) (f32x4.extract_lane 1 (local.get $mx)))
              (f32.max (f32x4.extract_lane 2 (local.get $mx)) (f32x4.extract_lane 3 (local.get $mx)))))
            (if (i32.lt_u (local.get $stop) (local.get $end))
              (then (local.set $next (f32.max (local.get $next) (call $row_max
                (i32.add (local.get $stop) (local.get $dn))
                (i32.shr_u (i32.sub (local.get $end) (local.get $stop)) (i32.const 2)))))))))
        (f32.store (i32.add (local.get $m) (i32.shl (local.get $row) (i32.const 2))) (local.get $max))
        (f32.store (i32.add (local.get $s) (i32.shl (local.get $row) (i32.const 2)))
          (f32.demote_f64 (f64.add (f64x2.extract_lane 0 (local.get $sum)) (f64x2.extract_lane 1 (local.get $sum)))))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))

  ;; The maximum of the n floats at byte offset p (n >= 1), two accumulators, 8 values a step while 8
  ;; remain. pmax(a, v) keeps a when v is NaN, so NaNs are skipped (softmax_rows brings them back).
  (func $row_max (param $p i32) (param $n i32) (result f32)
    (local $end i32) (local $vend i32) (local $mx v128) (local $mx2 v128) (local $max f32)
    (local.set $end (i32.add (local.get $p) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $vend (i32.add (local.get $p) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (local.set $mx (v128.const f32x4 -inf -inf -inf -inf))
    (local.set $mx2 (local.get $mx))
    (block $max8_done
      (loop $max8
        (br_if $max8_done (i32.gt_u (i32.add (local.get $p) (i32.const 32)) (local.get $vend)))
        (local.set $mx (f32x4.pmax (local.get $mx) (v128.load (local.get $p))))
        (local.set $mx2 (f32x4.pmax (local.get $mx2) (v128.load offset=16 (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 32)))
        (br $max8)))
    (if (i32.lt_u (local.get $p) (local.get $vend))
      (then
        (local.set $mx (f32x4.pmax (local.get $mx) (v128.load (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))))
    (local.set $mx (f32x4.pmax (local.get $mx) (local.get $mx2)))
    (local.set $max (f32.max
      (f32.max (f32x4.extract_lane 0 (local.get $mx)) (f32x4.extract_lane 1 (local.get $mx)))
      (f32.max (f32x4.extract_lane 2 (local.get $mx)) (f32x4.extract_lane 3 (local.get $mx)))))
    (block $max1_done
      (loop $max1
        (br_if $max1_done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $max (f32.max (local.get $max) (f32.load (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $max1)))
    (local.get $max))

  ;; AdamW for elements i0 <= i < i1 of one parameter (lib/optim.ts): the same float32 operations in
  ;; the same order as its op chain, so the result is bit-identical to it:
  ;;   g' = g gs;  m1 = m b1 + g' (1 - b1);  v1 = v b2 + g'^2 (1 - b2)
  ;;   p1 = p decay - m1 / (sqrt(v1) / sqrt(bc2) + eps) * step
  ;; (gs = 1 and decay = 1 where the chain skips the multiplication: x * 1 is exact). p, g, m, v are
  ;; read, po, mo, vo written (byte offsets); float32 arrays.
  (func (export "adamw")
    (param $p i32) (param $g i32) (param $m i32) (param $v i32) (param $po i32) (param $mo i32) (param $vo i32)
    (param $i0 i32) (param $i1 i32)
    (param $gs f32) (param $b1 f32) (param $omb1 f32) (param $b2 f32) (param $omb2 f32) (param $decay f32)
    (param $sqrt_bc2 f32) (param $eps f32) (param $step f32)
    (local $o i32) (local $end i32) (local $vend i32)
    (local $gv v128) (local $m1 v128) (local $v1 v128)
    (local $vgs v128) (local $vb1 v128) (local $vomb1 v128) (local $vb2 v128) (local $vomb2 v128)
    (local $vdecay v128) (local $vsqrt_bc2 v128) (local $veps v128) (local $vstep v128)
    (local $gf f32) (local $m1f f32) (local $v1f f32)
    (local.set $vgs (f32x4.splat (local.get $gs)))
    (local.set $vb1 (f32x4.splat (local.get $b1)))
    (local.set $vomb1 (f32x4.splat (local.get $omb1)))
    (local.set $vb2 (f32x4.splat (local.get $b2)))
    (local.set $vomb2 (f32x4.splat (local.get $omb2)))
    (local.set $vdecay (f32x4.splat (local.get $decay)))
    (local.set $vsqrt_bc2 (f32x4.splat (local.get $sqrt_bc2)))
    (local.set $veps (f32x4.splat (local.get $eps)))
    (local.set $vstep (f32x4.splat (local.get $step)))
    ;; o walks byte offsets from i0; the vectors stop where fewer than 4 elements remain
    (local.set $o (i32.shl (local.get $i0) (i32.const 2)))
    (local.set $end (i32.shl (local.get $i1) (i32.const 2)))
    (local.set $vend (i32.sub (local.get $end) (i32.const 12)))
    (block $vectors_done
      (loop $vectors
        (br_if $vectors_done (i32.ge_s (local.get $o) (local.get $vend)))
        (local.set $gv (f32x4.mul (v128.load (i32.add (local.get $g) (local.get $o))) (local.get $vgs)))
        (local.set $m1 (f32x4.add
          (f32x4.mul (v128.load (i32.add (local.get $m) (local.get $o))) (local.get $vb1))
          (f32x4.mul (local.get $gv) (local.get $vomb1))))
        (local.set $v1 (f32x4.add
          (f32x4.mul (v128.load (i32.add (local.get $v) (local.get $o))) (local.get $vb2))
          (f32x4.mul (f32x4.mul (local.get $gv) (local.get $gv)) (local.get $vomb2))))
        (v128.store (i32.add (local.get $mo) (local.get $o)) (local.get $m1))
        (v128.store (i32.add (local.get $vo) (local.get $o)) (local.get $v1))
        (v128.store (i32.add (local.get $po) (local.get $o))
          (f32x4.sub
            (f32x4.mul (v128.load (i32.add (local.get $p) (local.get $o))) (local.get $vdecay))
            (f32x4.mul
              (f32x4.div (local.get $m1)
                (f32x4.add (f32x4.div (f32x4.sqrt (local.get $v1)) (local.get $vsqrt_bc2)) (local.get $veps)))
              (local.get $vstep))))
        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $vectors)))
    (block $scalars_done
      (loop $scalars
        (br_if $scalars_done (i32.ge_s (local.get $o) (local.get $end)))
        (local.set $gf (f32.mul (f32.load (i32.add (local.get $g) (local.get $o))) (local.get $gs)))
        (local.set $m1f (f32.add
          (f32.mul (f32.load (i32.add (local.get $m) (local.get $o))) (local.get $b1))
          (f32.mul (local.get $gf) (local.get $omb1))))
        (local.set $v1f (f32.add
          (f32.mul (f32.load (i32.add (local.get $v) (local.get $o))) (local.get $b2))
          (f32.mul (f32.mul (local.get $gf) (local.get $gf)) (local.get $omb2))))
        (f32.store (i32.add (local.get $mo) (local.get $o)) (local.get $m1f))
        (f32.store (i32.add (local.get $vo) (local.get $o)) (local.get $v1f))
        (f32.store (i32.add (local.get $po) (local.get $o))
          (f32.sub
            (f32.mul (f32.load (i32.add (local.get $p) (local.get $o))) (local.get $decay))
            (f32.mul
              (f32.div (local.get $m1f)
                (f32.add (f32.div (f32.sqrt (local.get $v1f)) (local.get $sqrt_bc2)) (local.get $eps)))
              (local.get $step))))
        (local.set $o (i32.add (local.get $o) (i32.const 4)))
        (br $scalars))))

  ;; y = tanh(x) for elements i0 <= i < i1 (byte offsets x, y; may be equal), to ~2 ulp, as Cephes'
  ;; tanhf: for |x| < 0.625 the odd polynomial x + x^3 P(x^2); above, 1 - 2 / (exp(2|x|) + 1) with the
  ;; sign of x, exp by Cephes' expf (Cody-Waite reduction, degree-7 polynomial, no fused
  ;; multiply-adds; 2|x| clamped to 88: the result is 1 from ~9 on). Both are computed for a vector
  ;; and the lanes pick one; the sign of x is copied in last. NaN stays NaN; -0
  ;; stays -0.
  (func (export "tanh") (param $x i32) (param $y i32) (param $i0 i32) (param $i1 i32)
    (local $o i32) (local $end i32) (local $left i32)
    (local $v v128) (local $a v128) (local $z v128) (local $small v128) (local $big v128)
    (local $t v128) (local $kb v128) (local $k v128) (local $r v128) (local $q v128)
    (local $sign v128) (local $cut v128) (local $max_t v128) (local $two v128)
    (local $p0 v128) (local $p1 v128) (local $p2 v128) (local $p3 v128) (local $p4 v128)
    (local $log2e v128) (local $round v128) (local $ln2_hi v128) (local $ln2_lo v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128) (local $c4 v128) (local $c5 v128)
    (local $one v128) (local $bias v128)
    (local.set $sign (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000))
    (local.set $cut (v128.const f32x4 0.625 0.625 0.625 0.625))
    (local.set $max_t (v128.const f32x4 88 88 88 88))
    (local.set $two (v128.const f32x4 2 2 2 2))
    (local.set $p0 (v128.const f32x4 -5.70498872745e-3 -5.70498872745e-3 -5.70498872745e-3 -5.70498872745e-3))
    (local.set $p1 (v128.const f32x4 2.06390887954e-2 2.06390887954e-2 2.06390887954e-2 2.06390887954e-2))
    (local.set $p2 (v128.const f32x4 -5.37397155531e-2 -5.37397155531e-2 -5.37397155531e-2 -5.37397155531e-2))
    (local.set $p3 (v128.const f32x4 1.33314422036e-1 1.33314422036e-1 1.33314422036e-1 1.33314422036e-1))
    (local.set $p4 (v128.const f32x4 -3.33332819422e-1 -3.33332819422e-1 -3.33332819422e-1 -3.33332819422e-1))
    (local.set $log2e (v128.const f32x4 1.44269504 1.44269504 1.44269504 1.44269504))
    (local.set $round (v128.const f32x4 12582912 12582912 12582912 12582912))
    (local.set $ln2_hi (v128.const f32x4 0.693359375 0.693359375 0.693359375 0.693359375))
    (local.set $ln2_lo (v128.const f32x4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4))
    (local.set $c0 (v128.const f32x4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4))
    (local.set $c1 (v128.const f32x4 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3))
    (local.set $c2 (v128.const f32x4 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3))
    (local.set $c3 (v128.const f32x4 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2))
    (local.set $c4 (v128.const f32x4 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1))
    (local.set $c5 (v128.const f32x4 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1))
    (local.set $one (v128.const f32x4 1 1 1 1))
    (local.set $bias (v128.const i32x4 127 127 127 127))
    (local.set $o (i32.shl (local.get $i0) (i32.const 2)))
    (local.set $end (i32.shl (local.get $i1) (i32.const 2)))
    (block $done
      (loop $vectors
        (br_if $done (i32.ge_s (local.get $o) (local.get $end)))
        ;; the last 1-3 elements go through as one vector padded with zeros (not stored)
        (local.set $left (i32.sub (local.get $end) (local.get $o)))
        (if (i32.ge_u (local.get $left) (i32.const 16))
          (then (local.set $v (v128.load (i32.add (local.get $x) (local.get $o)))))
          (else
            (local.set $v (v128.load32_lane 0 (i32.add (local.get $x) (local.get $o)) (v128.const i32x4 0 0 0 0)))
            (if (i32.ge_u (local.get $left) (i32.const 8))
              (then (local.set $v (v128.load32_lane offset=4 1 (i32.add (local.get $x) (local.get $o)) (local.get $v)))))
            (if (i32.ge_u (local.get $left) (i32.const 12))
              (then (local.set $v (v128.load32_lane offset=8 2 (i32.add (local.get $x) (local.get $o)) (local.get $v)))))))
        (local.set $a (f32x4.abs (local.get $v)))
        ;; small |x|: x + x z P(z), z = x^2
        (local.set $z (f32x4.mul (local.get $v) (local.get $v)))
        (local.set $small (f32x4.add (f32x4.mul (local.get $p0) (local.get $z)) (local.get $p1)))
        (local.set $small (f32x4.add (f32x4.mul (local.get $small) (local.get $z)) (local.get $p2)))
        (local.set $small (f32x4.add (f32x4.mul (local.get $small) (local.get $z)) (local.get $p3)))
        (local.set $small (f32x4.add (f32x4.mul (local.get $small) (local.get $z)) (local.get $p4)))
        (local.set $small (f32x4.add
          (f32x4.mul (f32x4.mul (local.get $small) (local.get $z)) (local.get $v)) (local.get $v)))
        ;; big |x|: 1 - 2 / (exp(t) + 1), t = min(2|x|, 88)
        (local.set $t (f32x4.pmin (f32x4.mul (local.get $a) (local.get $two)) (local.get $max_t)))
        (local.set $kb (f32x4.add (f32x4.mul (local.get $t) (local.get $log2e)) (local.get $round)))
        (local.set $k (f32x4.sub (local.get $kb) (local.get $round)))
        (local.set $r (f32x4.sub (local.get $t) (f32x4.mul (local.get $k) (local.get $ln2_hi))))
        (local.set $r (f32x4.sub (local.get $r) (f32x4.mul (local.get $k) (local.get $ln2_lo))))
        (local.set $q (f32x4.add (f32x4.mul (local.get $c0) (local.get $r)) (local.get $c1)))
        (local.set $q (f32x4.add (f32x4.mul (local.get $q) (local.get $r)) (local.get $c2)))
        (local.set $q (f32x4.add (f32x4.mul (local.get $q) (local.get $r)) (local.get $c3)))
        (local.set $q (f32x4.add (f32x4.mul (local.get $q) (local.get $r)) (local.get $c4)))
        (local.set $q (f32x4.add (f32x4.mul (local.get $q) (local.get $r)) (local.get $c5)))
        (local.set $q (f32x4.add (f32x4.add
          (f32x4.mul (local.get $q) (f32x4.mul (local.get $r) (local.get $r))) (local.get $r)) (local.get $one)))
        (local.set $q (f32x4.mul (local.get $q)
          (i32x4.shl (i32x4.add (local.get $kb) (local.get $bias)) (i32.const 23))))
        (local.set $big (f32x4.sub (local.get $one)
          (f32x4.div (local.get $two) (f32x4.add (local.get $q) (local.get $one)))))
        ;; pick a branch per lane, then give every lane the sign of x (the polynomial loses it at -0)
        (local.set $small (v128.bitselect (local.get $big) (local.get $small) (f32x4.ge (local.get $a) (local.get $cut))))
        (local.set $v (v128.or (v128.andnot (local.get $small) (local.get $sign)) (v128.and (local.get $v) (local.get $sign))))
        (if (i32.ge_u (local.get $left) (i32.const 16))
          (then (v128.store (i32.add (local.get $y) (local.get $o)) (local.get $v)))
          (else
            (v128.store32_lane 0 (i32.add (local.get $y) (local.get $o)) (local.get $v))
            (if (i32.ge_u (local.get $left) (i32.const 8))
              (then (v128.store32_lane offset=4 1 (i32.add (local.get $y) (local.get $o)) (local.get $v))))
            (if (i32.ge_u (local.get $left) (i32.const 12))
              (then (v128.store32_lane offset=8 2 (i32.add (local.get $y) (local.get $o)) (local.get $v))))))
        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $vectors))))

  ;; LayerNorm over rows of C values (C a multiple of 4), rows r0 <= row < r1, as lib/nn.ts's op chain
  ;; computes it in float32: mean = sum(x) / C, var = sum((x - mean)^2) / C, rstd = 1 / sqrt(var + eps),
  ;; y = (x - mean) * rstd * w (+ b when has_bias). Keeps mean and rstd per row for the backward pass.
  (func (export "layernorm_fwd")
    (param $x i32) (param $w i32) (param $b i32) (param $y i32) (param $mean i32) (param $rstd i32)
    (param $r0 i32) (param $r1 i32) (param $c i32) (param $eps f32) (param $has_bias i32)
    (local $row i32) (local $o i32) (local $px i32) (local $py i32) (local $bytes i32)
    (local $acc v128) (local $d v128) (local $vm v128) (local $vr v128) (local $m f32) (local $r f32)
    (local.set $bytes (i32.shl (local.get $c) (i32.const 2)))
    (local.set $row (local.get $r0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $r1)))
        (local.set $px (i32.add (local.get $x) (i32.mul (local.get $row) (local.get $bytes))))
        (local.set $py (i32.add (local.get $y) (i32.mul (local.get $row) (local.get $bytes))))
        ;; the mean
        (local.set $acc (v128.const f32x4 0 0 0 0))
        (local.set $o (i32.const 0))
        (loop $sum
          (local.set $acc (f32x4.add (local.get $acc) (v128.load (i32.add (local.get $px) (local.get $o)))))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (br_if $sum (i32.lt_u (local.get $o) (local.get $bytes))))
        (local.set $m (f32.div (call $hsum (local.get $acc)) (f32.convert_i32_u (local.get $c))))
        (local.set $vm (f32x4.splat (local.get $m)))
        ;; the variance about it, then 1 / sqrt(var + eps)
        (local.set $acc (v128.const f32x4 0 0 0 0))
        (local.set $o (i32.const 0))
        (loop $var
          (local.set $d (f32x4.sub (v128.load (i32.add (local.get $px) (local.get $o))) (local.get $vm)))
          (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (local.get $d) (local.get $d))))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (br_if $var (i32.lt_u (local.get $o) (local.get $bytes))))
        (local.set $r (f32.div (f32.const 1) (f32.sqrt (f32.add
          (f32.div (call $hsum (local.get $acc)) (f32.convert_i32_u (local.get $c))) (local.get $eps)))))
        (local.set $vr (f32x4.splat (local.get $r)))
        ;; y
        (local.set $o (i32.const 0))
        (loop $out
          (local.set $d (f32x4.mul
            (f32x4.mul (f32x4.sub (v128.load (i32.add (local.get $px) (local.get $o))) (local.get $vm)) (local.get $vr))
            (v128.load (i32.add (local.get $w) (local.get $o)))))
          (if (local.get $has_bias)
            (then (local.set $d (f32x4.add (local.get $d) (v128.load (i32.add (local.get $b) (local.get $o)))))))
          (v128.store (i32.add (local.get $py) (local.get $o)) (local.get $d))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (br_if $out (i32.lt_u (local.get $o) (local.get $bytes))))
        (f32.store (i32.add (local.get $mean) (i32.shl (local.get $row) (i32.const 2))) (local.get $m))
        (f32.store (i32.add (local.get $rstd) (i32.shl (local.get $row) (i32.const 2))) (local.get $r))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))

  ;; The input gradient of layernorm_fwd for rows r0 <= row < r1: with xhat = (x - mean) rstd and
  ;; g = dy w, dx = rstd (g - mean(g) - xhat mean(g xhat)).
  (func (export "layernorm_dx")
    (param $dy i32) (param $x i32) (param $w i32) (param $mean i32) (param $rstd i32) (param $dx i32)
    (param $r0 i32) (param $r1 i32) (param $c i32)
    (local $row i32) (local $o i32) (local $base i32) (local $bytes i32)
    (local $g v128) (local $xh v128) (local $sg v128) (local $sgx v128)
    (local $vm v128) (local $vr v128) (local $va v128) (local $vb v128) (local $n f32)
    (local.set $bytes (i32.shl (local.get $c) (i32.const 2)))
    (local.set $n (f32.convert_i32_u (local.get $c)))
    (local.set $row (local.get $r0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $r1)))
        (local.set $base (i32.mul (local.get $row) (local.get $bytes)))
        (local.set $vm (v128.load32_splat (i32.add (local.get $mean) (i32.shl (local.get $row) (i32.const 2)))))
        (local.set $vr (v128.load32_splat (i32.add (local.get $rstd) (i32.shl (local.get $row) (i32.const 2)))))
        ;; sums of g and g xhat
        (local.set $sg (v128.const f32x4 0 0 0 0))
        (local.set $sgx (v128.const f32x4 0 0 0 0))
        (local.set $o (i32.const 0))
        (loop $sums
          (local.set $g (f32x4.mul (v128.load (i32.add (local.get $dy) (i32.add (local.get $base) (local.get $o))))
            (v128.load (i32.add (local.get $w) (local.get $o)))))
          (local.set $xh (f32x4.mul
            (f32x4.sub (v128.load (i32.add (local.get $x) (i32.add (local.get $base) (local.get $o)))) (local.get $vm))
            (local.get $vr)))
          (local.set $sg (f32x4.add (local.get $sg) (local.get $g)))
          (local.set $sgx (f32x4.add (local.get $sgx) (f32x4.mul (local.get $g) (local.get $xh))))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (br_if $sums (i32.lt_u (local.get $o) (local.get $bytes))))
        (local.set $va (f32x4.splat (f32.div (call $hsum (local.get $sg)) (local.get $n))))
        (local.set $vb (f32x4.splat (f32.div (call $hsum (local.get $sgx)) (local.get $n))))
        ;; dx
        (local.set $o (i32.const 0))
        (loop $out
          (local.set $g (f32x4.mul (v128.load (i32.add (local.get $dy) (i32.add (local.get $base) (local.get $o))))
            (v128.load (i32.add (local.get $w) (local.get $o)))))
          (local.set $xh (f32x4.mul
            (f32x4.sub (v128.load (i32.add (local.get $x) (i32.add (local.get $base) (local.get $o)))) (local.get $vm))
            (local.get $vr)))
          (v128.store (i32.add (local.get $dx) (i32.add (local.get $base) (local.get $o)))
            (f32x4.mul (local.get $vr)
              (f32x4.sub (f32x4.sub (local.get $g) (local.get $va)) (f32x4.mul (local.get $xh) (local.get $vb)))))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (br_if $out (i32.lt_u (local.get $o) (local.get $bytes))))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))

  ;; The weight and bias gradients of layernorm_fwd over all `rows` rows: dw = sum over rows of
  ;; dy xhat, db = sum of dy, accumulated row by row in float32 (one thread: C values per row).
  (func (export "layernorm_dwdb")
    (param $dy i32) (param $x i32) (param $mean i32) (param $rstd i32) (param $dw i32) (param $db i32)
    (param $rows i32) (param $c i32)
    (local $row i32) (local $o i32) (local $base i32) (local $bytes i32)
    (local $d v128) (local $vm v128) (local $vr v128)
    (local.set $bytes (i32.shl (local.get $c) (i32.const 2)))
    (memory.fill (local.get $dw) (i32.const 0) (local.get $bytes))
    (memory.fill (local.get $db) (i32.const 0) (local.get $bytes))
    (local.set $row (i32.const 0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $rows)))
        (local.set $base (i32.mul (local.get $row) (local.get $bytes)))
        (local.set $vm (v128.load32_splat (i32.add (local.get $mean) (i32.shl (local.get $row) (i32.const 2)))))
        (local.set $vr (v128.load32_splat (i32.add (local.get $rstd) (i32.shl (local.get $row) (i32.const 2)))))
        (local.set $o (i32.const 0))
        (loop $cols
          (local.set $d (v128.load (i32.add (local.get $dy) (i32.add (local.get $base) (local.get $o)))))
          (v128.store (i32.add (local.get $db) (local.get $o))
            (f32x4.add (v128.load (i32.add (local.get $db) (local.get $o))) (local.get $d)))
          (v128.store (i32.add (local.get $dw) (local.get $o))
            (f32x4.add (v128.load (i32.add (local.get $dw) (local.get $o)))
              (f32x4.mul (local.get $d) (f32x4.mul
                (f32x4.sub (v128.load (i32.add (local.get $x) (i32.add (local.get $base) (local.get $o)))) (local.get $vm))
                (local.get $vr)))))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (br_if $cols (i32.lt_u (local.get $o) (local.get $bytes))))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))

  ;; The per-image norm + channel affine + ReLU after each conv of the image models
  ;; (lib/tensor/ops/image_norm/wasm.ts), images r0 <= row < r1 of x [N, n], n = H W C values an image (any
  ;; n, any C): mean = sum(x) / n and var = sum((x - mean)^2) / n (two passes, float32 vectors),
  ;; rstd = 1 / sqrt(var + eps), pre = ((x - mean) rstd) g[ch] + b[ch] with ch = index mod C, and y = pre, or
  ;; max(pre, 0) when relu. g and b come as gb [2, 4C], each repeated four times: the four lanes at index 4k
  ;; of an image then find their channels' values at (4k mod 4C) + lane whatever C is. Keeps
  ;; (mean, rstd) per image in stats [N, 2] for imgnorm_dx.
  (func (export "imgnorm_fwd")
    (param $x i32) (param $gb i32) (param $y i32) (param $stats i32)
    (param $r0 i32) (param $r1 i32) (param $n i32) (param $c i32) (param $eps f32) (param $relu i32)
    (local $row i32) (local $o i32) (local $t i32) (local $px i32) (local $py i32) (local $pb i32)
    (local $bytes i32) (local $vbytes i32) (local $tile i32)
    (local $acc v128) (local $d v128) (local $vm v128) (local $vr v128) (local $floor v128)
    (local $m f32) (local $r f32) (local $s f32) (local $v f32) (local $fn f32) (local $sfloor f32)
    (local.set $bytes (i32.shl (local.get $n) (i32.const 2)))
    (local.set $vbytes (i32.and (local.get $bytes) (i32.const -16)))
    (local.set $tile (i32.shl (local.get $c) (i32.const 4)))
    (local.set $pb (i32.add (local.get $gb) (local.get $tile)))
    (local.set $fn (f32.convert_i32_u (local.get $n)))
    ;; max(pre, floor): 0 with relu, -inf (no change) without
    (local.set $sfloor (select (f32.const 0) (f32.const -inf) (local.get $relu)))
    (local.set $floor (f32x4.splat (local.get $sfloor)))
    (local.set $row (local.get $r0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $r1)))
        (local.set $px (i32.add (local.get $x) (i32.mul (local.get $row) (local.get $bytes))))
        (local.set $py (i32.add (local.get $y) (i32.mul (local.get $row) (local.get $bytes))))
        ;; the mean
        (local.set $acc (v128.const f32x4 0 0 0 0))
        (local.set $s (f32.const 0))
        (local.set $o (i32.const 0))
        (if (i32.lt_u (local.get $o) (local.get $vbytes)) (then (loop $sum
          (local.set $acc (f32x4.add (local.get $acc) (v128.load (i32.add (local.get $px) (local.get $o)))))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (br_if $sum (i32.lt_u (local.get $o) (local.get $vbytes))))))
        (if (i32.lt_u (local.get $o) (local.get $bytes)) (then (loop $sum_tail
          (local.set $s (f32.add (local.get $s) (f32.load (i32.add (local.get $px) (local.get $o)))))
          (local.set $o (i32.add (local.get $o) (i32.const 4)))
          (br_if $sum_tail (i32.lt_u (local.get $o) (local.get $bytes))))))
        (local.set $m (f32.div (f32.add (call $hsum (local.get $acc)) (local.get $s)) (local.get $fn)))
        (local.set $vm (f32x4.splat (local.get $m)))
        ;; the variance about it, then 1 / sqrt(var + eps)
        (local.set $acc (v128.const f32x4 0 0 0 0))
        (local.set $s (f32.const 0))
        (local.set $o (i32.const 0))
        (if (i32.lt_u (local.get $o) (local.get $vbytes)) (then (loop $var
          (local.set $d (f32x4.sub (v128.load (i32.add (local.get $px) (local.get $o))) (local.get $vm)))
          (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul (local.get $d) (local.get $d))))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (br_if $var (i32.lt_u (local.get $o) (local.get $vbytes))))))
        (if (i32.lt_u (local.get $o) (local.get $bytes)) (then (loop $var_tail
          (local.set $v (f32.sub (f32.load (i32.add (local.get $px) (local.get $o))) (local.get $m)))
          (local.set $s (f32.add (local.get $s) (f32.mul (local.get $v) (local.get $v))))
          (local.set $o (i32.add (local.get $o) (i32.const 4)))
          (br_if $var_tail (i32.lt_u (local.get $o) (local.get $bytes))))))
        (local.set $r (f32.div (f32.const 1) (f32.sqrt (f32.add
          (f32.div (f32.add (call $hsum (local.get $acc)) (local.get $s)) (local.get $fn)) (local.get $eps)))))
        (local.set $vr (f32x4.splat (local.get $r)))
        ;; y, walking the channel tiles with t (bytes, wrapping at 4C values)
        (local.set $o (i32.const 0))
        (local.set $t (i32.const 0))
        (if (i32.lt_u (local.get $o) (local.get $vbytes)) (then (loop $out
          (local.set $d (f32x4.add
            (f32x4.mul
              (f32x4.mul (f32x4.sub (v128.load (i32.add (local.get $px) (local.get $o))) (local.get $vm)) (local.get $vr))
              (v128.load (i32.add (local.get $gb) (local.get $t))))
            (v128.load (i32.add (local.get $pb) (local.get $t)))))
          (v128.store (i32.add (local.get $py) (local.get $o)) (f32x4.pmax (local.get $d) (local.get $floor)))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (local.set $t (i32.add (local.get $t) (i32.const 16)))
          (local.set $t (select (i32.const 0) (local.get $t) (i32.eq (local.get $t) (local.get $tile))))
          (br_if $out (i32.lt_u (local.get $o) (local.get $vbytes))))))
        (if (i32.lt_u (local.get $o) (local.get $bytes)) (then (loop $out_tail
          (local.set $v (f32.add
            (f32.mul
              (f32.mul (f32.sub (f32.load (i32.add (local.get $px) (local.get $o))) (local.get $m)) (local.get $r))
              (f32.load (i32.add (local.get $gb) (local.get $t))))
            (f32.load (i32.add (local.get $pb) (local.get $t)))))
          (f32.store (i32.add (local.get $py) (local.get $o))
            (select (local.get $sfloor) (local.get $v) (f32.lt (local.get $v) (local.get $sfloor))))
          (local.set $o (i32.add (local.get $o) (i32.const 4)))
          (local.set $t (i32.add (local.get $t) (i32.const 4)))
          (local.set $t (select (i32.const 0) (local.get $t) (i32.eq (local.get $t) (local.get $tile))))
          (br_if $out_tail (i32.lt_u (local.get $o) (local.get $bytes))))))
        (f32.store (i32.add (local.get $stats) (i32.shl (local.get $row) (i32.const 3))) (local.get $m))
        (f32.store offset=4 (i32.add (local.get $stats) (i32.shl (local.get $row) (i32.const 3))) (local.get $r))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))

  ;; The input gradient of imgnorm_fwd for images r0 <= row < r1, and per image the sums that make the
  ;; channel gradients. With xhat = (x - mean) rstd, d = dy (times the ReLU's mask pre > 0 when relu: pre
  ;; recomputed from x by the forward's own operations, so the mask is exactly y > 0) and e = d g[ch]:
  ;; dx = rstd ((e - mean(e)) - xhat mean(e xhat)). part [N, 2, 4C] gets, at the channel tiles' positions
  ;; (as gb's), the image's sums of d xhat and of d; imgnorm_dgdb adds them up per channel.
  (func (export "imgnorm_dx")
    (param $dy i32) (param $x i32) (param $gb i32) (param $stats i32) (param $dx i32) (param $part i32)
    (param $r0 i32) (param $r1 i32) (param $n i32) (param $c i32) (param $relu i32)
    (local $row i32) (local $o i32) (local $t i32) (local $base i32) (local $pb i32) (local $pa i32)
    (local $pd i32) (local $bytes i32) (local $vbytes i32) (local $tile i32)
    (local $xh v128) (local $d v128) (local $e v128) (local $gv v128) (local $keep v128) (local $zero v128)
    (local $vm v128) (local $vr v128) (local $sg v128) (local $sgx v128) (local $va v128) (local $vb v128)
    (local $m f32) (local $r f32) (local $fn f32) (local $sxh f32) (local $sd f32) (local $se f32)
    (local $ssg f32) (local $ssgx f32) (local $a f32) (local $bb f32)
    (local.set $bytes (i32.shl (local.get $n) (i32.const 2)))
    (local.set $vbytes (i32.and (local.get $bytes) (i32.const -16)))
    (local.set $tile (i32.shl (local.get $c) (i32.const 4)))
    (local.set $pb (i32.add (local.get $gb) (local.get $tile)))
    (local.set $fn (f32.convert_i32_u (local.get $n)))
    (local.set $zero (v128.const f32x4 0 0 0 0))
    ;; all lanes kept without relu; with it, the lanes where pre > 0
    (local.set $keep (select (v128.const i32x4 0 0 0 0) (v128.const i32x4 -1 -1 -1 -1) (local.get $relu)))
    (local.set $row (local.get $r0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $r1)))
        (local.set $base (i32.mul (local.get $row) (local.get $bytes)))
        (local.set $m (f32.load (i32.add (local.get $stats) (i32.shl (local.get $row) (i32.const 3)))))
        (local.set $r (f32.load offset=4 (i32.add (local.get $stats) (i32.shl (local.get $row) (i32.const 3)))))
        (local.set $vm (f32x4.splat (local.get $m)))
        (local.set $vr (f32x4.splat (local.get $r)))
        (local.set $pa (i32.add (local.get $part) (i32.mul (local.get $row) (i32.shl (local.get $tile) (i32.const 1)))))
        (local.set $pd (i32.add (local.get $pa) (local.get $tile)))
        (memory.fill (local.get $pa) (i32.const 0) (i32.shl (local.get $tile) (i32.const 1)))
        ;; pass 1: sums of e and e xhat; the channel sums of d xhat and d
        (local.set $sg (local.get $zero))
        (local.set $sgx (local.get $zero))
        (local.set $ssg (f32.const 0))
        (local.set $ssgx (f32.const 0))
        (local.set $o (i32.const 0))
        (local.set $t (i32.const 0))
        (if (i32.lt_u (local.get $o) (local.get $vbytes)) (then (loop $sums
          (local.set $xh (f32x4.mul
            (f32x4.sub (v128.load (i32.add (local.get $x) (i32.add (local.get $base) (local.get $o)))) (local.get $vm))
            (local.get $vr)))
          (local.set $gv (v128.load (i32.add (local.get $gb) (local.get $t))))
          (local.set $d (v128.and (v128.load (i32.add (local.get $dy) (i32.add (local.get $base) (local.get $o))))
            (v128.or (local.get $keep) (f32x4.gt
              (f32x4.add (f32x4.mul (local.get $xh) (local.get $gv)) (v128.load (i32.add (local.get $pb) (local.get $t))))
              (local.get $zero)))))
          (local.set $e (f32x4.mul (local.get $d) (local.get $gv)))
          (local.set $sg (f32x4.add (local.get $sg) (local.get $e)))
          (local.set $sgx (f32x4.add (local.get $sgx) (f32x4.mul (local.get $e) (local.get $xh))))
          (v128.store (i32.add (local.get $pa) (local.get $t))
            (f32x4.add (v128.load (i32.add (local.get $pa) (local.get $t))) (f32x4.mul (local.get $d) (local.get $xh))))
          (v128.store (i32.add (local.get $pd) (local.get $t))
            (f32x4.add (v128.load (i32.add (local.get $pd) (local.get $t))) (local.get $d)))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (local.set $t (i32.add (local.get $t) (i32.const 16)))
          (local.set $t (select (i32.const 0) (local.get $t) (i32.eq (local.get $t) (local.get $tile))))
          (br_if $sums (i32.lt_u (local.get $o) (local.get $vbytes))))))
        (if (i32.lt_u (local.get $o) (local.get $bytes)) (then (loop $sums_tail
          (call $imgnorm_scalar (local.get $dy) (local.get $x) (local.get $gb) (local.get $pb)
            (i32.add (local.get $base) (local.get $o)) (local.get $t) (local.get $m) (local.get $r) (local.get $relu))
          (local.set $sd) (local.set $sxh)
          (local.set $se (f32.mul (local.get $sd) (f32.load (i32.add (local.get $gb) (local.get $t)))))
          (local.set $ssg (f32.add (local.get $ssg) (local.get $se)))
          (local.set $ssgx (f32.add (local.get $ssgx) (f32.mul (local.get $se) (local.get $sxh))))
          (f32.store (i32.add (local.get $pa) (local.get $t))
            (f32.add (f32.load (i32.add (local.get $pa) (local.get $t))) (f32.mul (local.get $sd) (local.get $sxh))))
          (f32.store (i32.add (local.get $pd) (local.get $t))
            (f32.add (f32.load (i32.add (local.get $pd) (local.get $t))) (local.get $sd)))
          (local.set $o (i32.add (local.get $o) (i32.const 4)))
          (local.set $t (i32.add (local.get $t) (i32.const 4)))
          (local.set $t (select (i32.const 0) (local.get $t) (i32.eq (local.get $t) (local.get $tile))))
          (br_if $sums_tail (i32.lt_u (local.get $o) (local.get $bytes))))))
        (local.set $a (f32.div (f32.add (call $hsum (local.get $sg)) (local.get $ssg)) (local.get $fn)))
        (local.set $bb (f32.div (f32.add (call $hsum (local.get $sgx)) (local.get $ssgx)) (local.get $fn)))
        (local.set $va (f32x4.splat (local.get $a)))
        (local.set $vb (f32x4.splat (local.get $bb)))
        ;; pass 2: dx
        (local.set $o (i32.const 0))
        (local.set $t (i32.const 0))
        (if (i32.lt_u (local.get $o) (local.get $vbytes)) (then (loop $out
          (local.set $xh (f32x4.mul
            (f32x4.sub (v128.load (i32.add (local.get $x) (i32.add (local.get $base) (local.get $o)))) (local.get $vm))
            (local.get $vr)))
          (local.set $gv (v128.load (i32.add (local.get $gb) (local.get $t))))
          (local.set $d (v128.and (v128.load (i32.add (local.get $dy) (i32.add (local.get $base) (local.get $o))))
            (v128.or (local.get $keep) (f32x4.gt
              (f32x4.add (f32x4.mul (local.get $xh) (local.get $gv)) (v128.load (i32.add (local.get $pb) (local.get $t))))
              (local.get $zero)))))
          (v128.store (i32.add (local.get $dx) (i32.add (local.get $base) (local.get $o)))
            (f32x4.mul (local.get $vr) (f32x4.sub
              (f32x4.sub (f32x4.mul (local.get $d) (local.get $gv)) (local.get $va))
              (f32x4.mul (local.get $xh) (local.get $vb)))))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (local.set $t (i32.add (local.get $t) (i32.const 16)))
          (local.set $t (select (i32.const 0) (local.get $t) (i32.eq (local.get $t) (local.get $tile))))
          (br_if $out (i32.lt_u (local.get $o) (local.get $vbytes))))))
        (if (i32.lt_u (local.get $o) (local.get $bytes)) (then (loop $out_tail
          (call $imgnorm_scalar (local.get $dy) (local.get $x) (local.get $gb) (local.get $pb)
            (i32.add (local.get $base) (local.get $o)) (local.get $t) (local.get $m) (local.get $r) (local.get $relu))
          (local.set $sd) (local.set $sxh)
          (f32.store (i32.add (local.get $dx) (i32.add (local.get $base) (local.get $o)))
            (f32.mul (local.get $r) (f32.sub
              (f32.sub (f32.mul (local.get $sd) (f32.load (i32.add (local.get $gb) (local.get $t)))) (local.get $a))
              (f32.mul (local.get $sxh) (local.get $bb)))))
          (local.set $o (i32.add (local.get $o) (i32.const 4)))
          (local.set $t (i32.add (local.get $t) (i32.const 4)))
          (local.set $t (select (i32.const 0) (local.get $t) (i32.eq (local.get $t) (local.get $tile))))
          (br_if $out_tail (i32.lt_u (local.get $o) (local.get $bytes))))))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))

  ;; One value of imgnorm_dx's scalar tail at byte offset o of dy and x (tile offset t): xhat, and d (dy,
  ;; or 0 where relu and pre = xhat g + b is not > 0).
  (func $imgnorm_scalar
    (param $dy i32) (param $x i32) (param $gb i32) (param $pb i32) (param $o i32) (param $t i32)
    (param $m f32) (param $r f32) (param $relu i32) (result f32 f32)
    (local $xh f32) (local $d f32)
    (local.set $xh (f32.mul (f32.sub (f32.load (i32.add (local.get $x) (local.get $o))) (local.get $m)) (local.get $r)))
    (local.set $d (f32.load (i32.add (local.get $dy) (local.get $o))))
    (if (local.get $relu) (then
      (if (i32.eqz (f32.gt (f32.add (f32.mul (local.get $xh) (f32.load (i32.add (local.get $gb) (local.get $t))))
          (f32.load (i32.add (local.get $pb) (local.get $t)))) (f32.const 0)))
        (then (local.set $d (f32.const 0))))))
    (local.get $xh) (local.get $d))

  ;; The channel gradients of imgnorm_fwd from imgnorm_dx's per-image sums part [rows, 2, 4C]: for each
  ;; channel ch, dg[ch] = the sum over images and the four tile positions ch + kC of the sums of d xhat,
  ;; db[ch] the same of d (float32, one thread: 8 C values an image).
  (func (export "imgnorm_dgdb")
    (param $part i32) (param $dg i32) (param $db i32) (param $rows i32) (param $c i32)
    (local $ch i32) (local $row i32) (local $k i32) (local $p i32) (local $tile i32) (local $sg f32) (local $sb f32)
    (local.set $tile (i32.shl (local.get $c) (i32.const 4)))
    (local.set $ch (i32.const 0))
    (block $done
      (loop $channels
        (br_if $done (i32.ge_u (local.get $ch) (local.get $c)))
        (local.set $sg (f32.const 0))
        (local.set $sb (f32.const 0))
        (local.set $row (i32.const 0))
        (block $rows_done
          (loop $rows
            (br_if $rows_done (i32.ge_u (local.get $row) (local.get $rows)))
            (local.set $p (i32.add (i32.add (local.get $part) (i32.shl (local.get $ch) (i32.const 2)))
              (i32.mul (local.get $row) (i32.shl (local.get $tile) (i32.const 1)))))
            (local.set $k (i32.const 0))
            (loop $ks
              (local.set $sg (f32.add (local.get $sg) (f32.load (local.get $p))))
              (local.set $sb (f32.add (local.get $sb) (f32.load (i32.add (local.get $p) (local.get $tile)))))
              (local.set $p (i32.add (local.get $p) (i32.shl (local.get $c) (i32.const 2))))
              (local.set $k (i32.add (local.get $k) (i32.const 1)))
              (br_if $ks (i32.lt_u (local.get $k) (i32.const 4))))
            (local.set $row (i32.add (local.get $row) (i32.const 1)))
            (br $rows)))
        (f32.store (i32.add (local.get $dg) (i32.shl (local.get $ch) (i32.const 2))) (local.get $sg))
        (f32.store (i32.add (local.get $db) (i32.shl (local.get $ch) (i32.const 2))) (local.get $sb))
        (local.set $ch (i32.add (local.get $ch) (i32.const 1)))
        (br $channels))))

  ;; The sum of a vector's four lanes, in lane order ((l0 + l1) + l2) + l3.
  (func $hsum (param $v v128) (result f32)
    (f32.add (f32.add (f32.add (f32x4.extract_lane 0 (local.get $v)) (f32x4.extract_lane 1 (local.get $v)))
      (f32x4.extract_lane 2 (local.get $v))) (f32x4.extract_lane 3 (local.get $v))))

  ;; GELU forward, first part, elements i0 <= i < i1: u = (x ((x x) c + 1)) k, the argument of tanh.
  (func (export "gelu_inner") (param $x i32) (param $u i32) (param $i0 i32) (param $i1 i32) (param $c f32) (param $k f32)
    (local $o i32) (local $end i32) (local $vend i32)
    (local $v v128) (local $f f32) (local $vc v128) (local $vk v128) (local $one v128)
    (local.set $vc (f32x4.splat (local.get $c)))
    (local.set $vk (f32x4.splat (local.get $k)))
    (local.set $one (v128.const f32x4 1 1 1 1))
    (local.set $o (i32.shl (local.get $i0) (i32.const 2)))
    (local.set $end (i32.shl (local.get $i1) (i32.const 2)))
    (local.set $vend (i32.sub (local.get $end) (i32.const 12)))
    (block $vectors_done
      (loop $vectors
        (br_if $vectors_done (i32.ge_s (local.get $o) (local.get $vend)))
        (local.set $v (v128.load (i32.add (local.get $x) (local.get $o))))
        (v128.store (i32.add (local.get $u) (local.get $o))
          (f32x4.mul (f32x4.mul (local.get $v)
            (f32x4.add (f32x4.mul (f32x4.mul (local.get $v) (local.get $v)) (local.get $vc)) (local.get $one)))
            (local.get $vk)))
        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $vectors)))
    (block $scalars_done
      (loop $scalars
        (br_if $scalars_done (i32.ge_s (local.get $o) (local.get $end)))
        (local.set $f (f32.load (i32.add (local.get $x) (local.get $o))))
        (f32.store (i32.add (local.get $u) (local.get $o))
          (f32.mul (f32.mul (local.get $f)
            (f32.add (f32.mul (f32.mul (local.get $f) (local.get $f)) (local.get $c)) (f32.const 1)))
            (local.get $k)))
        (local.set $o (i32.add (local.get $o) (i32.const 4)))
        (br $scalars))))

  ;; GELU forward, last part: y = (x 0.5) (t + 1), t = tanh(u). t may be y.
  (func (export "gelu_out") (param $x i32) (param $t i32) (param $y i32) (param $i0 i32) (param $i1 i32)
    (local $o i32) (local $end i32) (local $vend i32)
    (local $half v128) (local $one v128)
    (local.set $half (v128.const f32x4 0.5 0.5 0.5 0.5))
    (local.set $one (v128.const f32x4 1 1 1 1))
    (local.set $o (i32.shl (local.get $i0) (i32.const 2)))
    (local.set $end (i32.shl (local.get $i1) (i32.const 2)))
    (local.set $vend (i32.sub (local.get $end) (i32.const 12)))
    (block $vectors_done
      (loop $vectors
        (br_if $vectors_done (i32.ge_s (local.get $o) (local.get $vend)))
        (v128.store (i32.add (local.get $y) (local.get $o))
          (f32x4.mul (f32x4.mul (v128.load (i32.add (local.get $x) (local.get $o))) (local.get $half))
            (f32x4.add (v128.load (i32.add (local.get $t) (local.get $o))) (local.get $one))))
        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $vectors)))
    (block $scalars_done
      (loop $scalars
        (br_if $scalars_done (i32.ge_s (local.get $o) (local.get $end)))
        (f32.store (i32.add (local.get $y) (local.get $o))
          (f32.mul (f32.mul (f32.load (i32.add (local.get $x) (local.get $o))) (f32.const 0.5))
            (f32.add (f32.load (i32.add (local.get $t) (local.get $o))) (f32.const 1))))
        (local.set $o (i32.add (local.get $o) (i32.const 4)))
        (br $scalars))))

  ;; GELU backward, from t = tanh(u): q = ((x x) 3c + 1) k, d = (x (1 - t t)) q,
  ;; dx = dy (((t + 1) + d) 0.5). t may be dx.
  (func (export "gelu_grad_out")
    (param $x i32) (param $t i32) (param $dy i32) (param $dx i32) (param $i0 i32) (param $i1 i32)
    (param $c3 f32) (param $k f32)
    (local $o i32) (local $end i32) (local $vend i32)
    (local $v v128) (local $tv v128) (local $q v128) (local $f f32) (local $tf f32) (local $qf f32)
    (local $vc3 v128) (local $vk v128) (local $one v128) (local $half v128)
    (local.set $vc3 (f32x4.splat (local.get $c3)))
    (local.set $vk (f32x4.splat (local.get $k)))
    (local.set $one (v128.const f32x4 1 1 1 1))
    (local.set $half (v128.const f32x4 0.5 0.5 0.5 0.5))
    (local.set $o (i32.shl (local.get $i0) (i32.const 2)))
    (local.set $end (i32.shl (local.get $i1) (i32.const 2)))
    (local.set $vend (i32.sub (local.get $end) (i32.const 12)))
    (block $vectors_done
      (loop $vectors
        (br_if $vectors_done (i32.ge_s (local.get $o) (local.get $vend)))
        (local.set $v (v128.load (i32.add (local.get $x) (local.get $o))))
        (local.set $tv (v128.load (i32.add (local.get $t) (local.get $o))))
        (local.set $q (f32x4.mul
          (f32x4.add (f32x4.mul (f32x4.mul (local.get $v) (local.get $v)) (local.get $vc3)) (local.get $one))
          (local.get $vk)))
        (local.set $q (f32x4.mul
          (f32x4.mul (local.get $v) (f32x4.sub (local.get $one) (f32x4.mul (local.get $tv) (local.get $tv))))
          (local.get $q)))
        (v128.store (i32.add (local.get $dx) (local.get $o))
          (f32x4.mul (v128.load (i32.add (local.get $dy) (local.get $o)))
            (f32x4.mul (f32x4.add (f32x4.add (local.get $tv) (local.get $one)) (local.get $q)) (local.get $half))))
        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $vectors)))
    (block $scalars_done
      (loop $scalars
        (br_if $scalars_done (i32.ge_s (local.get $o) (local.get $end)))
        (local.set $f (f32.load (i32.add (local.get $x) (local.get $o))))
        (local.set $tf (f32.load (i32.add (local.get $t) (local.get $o))))
        (local.set $qf (f32.mul
          (f32.add (f32.mul (f32.mul (local.get $f) (local.get $f)) (local.get $c3)) (f32.const 1))
          (local.get $k)))
        (local.set $qf (f32.mul
          (f32.mul (local.get $f) (f32.sub (f32.const 1) (f32.mul (local.get $tf) (local.get $tf))))
          (local.get $qf)))
        (f32.store (i32.add (local.get $dx) (local.get $o))
          (f32.mul (f32.load (i32.add (local.get $dy) (local.get $o)))
            (f32.mul (f32.add (f32.add (local.get $tf) (f32.const 1)) (local.get $qf)) (f32.const 0.5))))
        (local.set $o (i32.add (local.get $o) (i32.const 4)))
        (br $scalars))))

  ;; The im2col matrix of the conv filter gradient (lib/tensor/ops/conv2d/wasm.ts conv2DBackpropFilterWasm), rows
  ;; k0 <= k < k1 of col [K, rows], K = KH KW Ci, rows = nb OH OW: row k = (kh KW + kw) Ci + ch holds,
  ;; for images b0 <= b < b0 + nb and output pixels (oh, ow), the input x[b, h, w, ch] (NHWC) that
  ;; filter tap (kh, kw) sees there, h = oh sh + kh dh - pt, w = ow sw + kw dw - pl, or 0 in the padding.
  (func (export "im2col")
    (param $x i32) (param $col i32) (param $k0 i32) (param $k1 i32) (param $b0 i32) (param $nb i32)
    (param $in_h i32) (param $in_w i32) (param $ci i32) (param $out_h i32) (param $out_w i32) (param $k_w i32)
    (param $sh i32) (param $sw i32) (param $dh i32) (param $dw i32) (param $pt i32) (param $pl i32)
    (param $rows i32)
    (local $k i32) (local $kh i32) (local $kw i32) (local $ch i32) (local $p i32) (local $b i32)
    (local $xb i32) (local $xr i32) (local $oh i32) (local $ow i32) (local $h i32) (local $w i32)
    (local.set $k (local.get $k0))
    (block $k_done
      (loop $ks
        (br_if $k_done (i32.ge_u (local.get $k) (local.get $k1)))
        (local.set $kh (i32.div_u (local.get $k) (i32.mul (local.get $k_w) (local.get $ci))))
        (local.set $kw (i32.rem_u (i32.div_u (local.get $k) (local.get $ci)) (local.get $k_w)))
        (local.set $ch (i32.rem_u (local.get $k) (local.get $ci)))
        (local.set $p (i32.add (local.get $col) (i32.shl (i32.mul (local.get $k) (local.get $rows)) (i32.const 2))))
        (local.set $b (local.get $b0))
        (block $b_done
          (loop $bs
            (br_if $b_done (i32.ge_u (local.get $b) (i32.add (local.get $b0) (local.get $nb))))
            (local.set $xb (i32.add (local.get $x) (i32.shl (i32.add (local.get $ch)
              (i32.mul (local.get $b) (i32.mul (i32.mul (local.get $in_h) (local.get $in_w)) (local.get $ci))))
              (i32.const 2))))
            (local.set $oh (i32.const 0))
            (block $oh_done
              (loop $ohs
                (br_if $oh_done (i32.ge_u (local.get $oh) (local.get $out_h)))
                (local.set $h (i32.sub (i32.add (i32.mul (local.get $oh) (local.get $sh))
                  (i32.mul (local.get $kh) (local.get $dh))) (local.get $pt)))
                (if (i32.or (i32.lt_s (local.get $h) (i32.const 0)) (i32.ge_s (local.get $h) (local.get $in_h)))
                  (then
                    (memory.fill (local.get $p) (i32.const 0) (i32.shl (local.get $out_w) (i32.const 2)))
                    (local.set $p (i32.add (local.get $p) (i32.shl (local.get $out_w) (i32.const 2)))))
                  (else
                    (local.set $xr (i32.add (local.get $xb)
                      (i32.shl (i32.mul (i32.mul (local.get $h) (local.get $in_w)) (local.get $ci)) (i32.const 2))))
                    (local.set $ow (i32.const 0))
                    (block $ow_done
                      (loop $ows
                        (br_if $ow_done (i32.ge_u (local.get $ow) (local.get $out_w)))
                        (local.set $w (i32.sub (i32.add (i32.mul (local.get $ow) (local.get $sw))
                          (i32.mul (local.get $kw) (local.get $dw))) (local.get $pl)))
                        (f32.store (local.get $p)
                          (if (result f32)
                            (i32.or (i32.lt_s (local.get $w) (i32.const 0)) (i32.ge_s (local.get $w) (local.get $in_w)))
                            (then (f32.const 0))
                            (else (f32.load (i32.add (local.get $xr)
                              (i32.shl (i32.mul (local.get $w) (local.get $ci)) (i32.const 2)))))))
                        (local.set $p (i32.add (local.get $p) (i32.const 4)))
                        (local.set $ow (i32.add (local.get $ow) (i32.const 1)))
                        (br $ows)))))
                (local.set $oh (i32.add (local.get $oh) (i32.const 1)))
                (br $ohs)))
            (local.set $b (i32.add (local.get $b) (i32.const 1)))
            (br $bs)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $ks))))

  ;; The scatter-add of the conv input gradient (ops/conv2d/wasm.ts conv2DBackpropInputWasm), images i0 <= i < i1
  ;; of a chunk whose first image is b_base: col [nb OH OW, K] holds, per output pixel and filter tap
  ;; (kh, kw), the gradient for the Ci input channels it saw; each is added to dx[b, h, w, :] (NHWC), in
  ;; the order (oh, ow, kh, kw, ch). Images are disjoint in dx, so threads split them.
  (func (export "col2im")
    (param $col i32) (param $dx i32) (param $i0 i32) (param $i1 i32) (param $b_base i32)
    (param $in_h i32) (param $in_w i32) (param $ci i32) (param $out_h i32) (param $out_w i32)
    (param $k_h i32) (param $k_w i32) (param $sh i32) (param $sw i32) (param $dh i32) (param $dw i32)
    (param $pt i32) (param $pl i32)
    (local $i i32) (local $p i32) (local $xb i32) (local $o i32) (local $oh i32) (local $ow i32)
    (local $kh i32) (local $kw i32) (local $h i32) (local $w i32) (local $ch i32) (local $tap i32)
    ;; bytes of one filter tap's channels
    (local.set $tap (i32.shl (local.get $ci) (i32.const 2)))
    (local.set $i (local.get $i0))
    (block $i_done
      (loop $is
        (br_if $i_done (i32.ge_u (local.get $i) (local.get $i1)))
        (local.set $p (i32.add (local.get $col) (i32.mul (local.get $i)
          (i32.mul (i32.mul (local.get $out_h) (local.get $out_w))
            (i32.mul (i32.mul (local.get $k_h) (local.get $k_w)) (local.get $tap))))))
        (local.set $xb (i32.add (local.get $dx) (i32.mul (i32.add (local.get $b_base) (local.get $i))
          (i32.mul (i32.mul (local.get $in_h) (local.get $in_w)) (local.get $tap)))))
        (local.set $oh (i32.const 0))
        (block $oh_done
          (loop $ohs
            (br_if $oh_done (i32.ge_u (local.get $oh) (local.get $out_h)))
            (local.set $ow (i32.const 0))
            (block $ow_done
              (loop $ows
                (br_if $ow_done (i32.ge_u (local.get $ow) (local.get $out_w)))
                (local.set $kh (i32.const 0))
                (block $kh_done
                  (loop $khs
                    (br_if $kh_done (i32.ge_u (local.get $kh) (local.get $k_h)))
                    (local.set $h (i32.sub (i32.add (i32.mul (local.get $oh) (local.get $sh))
                      (i32.mul (local.get $kh) (local.get $dh))) (local.get $pt)))
                    (if (i32.or (i32.lt_s (local.get $h) (i32.const 0)) (i32.ge_s (local.get $h) (local.get $in_h)))
                      (then (local.set $p (i32.add (local.get $p) (i32.mul (local.get $k_w) (local.get $tap)))))
                      (else
                        (local.set $kw (i32.const 0))
                        (block $kw_done
                          (loop $kws
                            (br_if $kw_done (i32.ge_u (local.get $kw) (local.get $k_w)))
                            (local.set $w (i32.sub (i32.add (i32.mul (local.get $ow) (local.get $sw))
                              (i32.mul (local.get $kw) (local.get $dw))) (local.get $pl)))
                            (if (i32.or (i32.lt_s (local.get $w) (i32.const 0)) (i32.ge_s (local.get $w) (local.get $in_w)))
                              (then (local.set $p (i32.add (local.get $p) (local.get $tap))))
                              (else
                                (local.set $o (i32.add (local.get $xb) (i32.mul
                                  (i32.add (i32.mul (local.get $h) (local.get $in_w)) (local.get $w)) (local.get $tap))))
                                (local.set $ch (i32.const 0))
                                (block $ch_done
                                  (loop $chs
                                    (br_if $ch_done (i32.ge_u (local.get $ch) (local.get $ci)))
                                    (f32.store (local.get $o) (f32.add (f32.load (local.get $o)) (f32.load (local.get $p))))
                                    (local.set $o (i32.add (local.get $o) (i32.const 4)))
                                    (local.set $p (i32.add (local.get $p) (i32.const 4)))
                                    (local.set $ch (i32.add (local.get $ch) (i32.const 1)))
                                    (br $chs)))))
                            (local.set $kw (i32.add (local.get $kw) (i32.const 1)))
                            (br $kws)))))
                    (local.set $kh (i32.add (local.get $kh) (i32.const 1)))
                    (br $khs)))
                (local.set $ow (i32.add (local.get $ow) (i32.const 1)))
                (br $ows)))
            (local.set $oh (i32.add (local.get $oh) (i32.const 1)))
            (br $ohs)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $is))))

  ;; y[row] = A[row, 0:n] . x[0:n] for rows r0 <= row < r1 of A (row stride lda values): the output head
  ;; of a decoding step (A the [V, C] embedding) and attention's scores (A a head's slice of the key
  ;; cache). Sums in two float32 vectors over 8 values at a time, then the lanes, then a scalar tail.
  ;; (Four rows at a time, sharing x's loads, ran 2x slower under V8: kept to one row.)
  (func (export "gemv_rows")
    (param $a i32) (param $lda i32) (param $x i32) (param $y i32) (param $r0 i32) (param $r1 i32) (param $n i32)
    (local $row i32) (local $pa i32) (local $o i32) (local $nb i32) (local $acc0 v128) (local $acc1 v128)
    (local $zero v128) (local $s f32)
    (local.set $nb (i32.shl (local.get $n) (i32.const 2)))
    (local.set $row (local.get $r0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $r1)))
        (local.set $pa (i32.add (local.get $a) (i32.shl (i32.mul (local.get $row) (local.get $lda)) (i32.const 2))))
        (local.set $acc0 (local.get $zero))
        (local.set $acc1 (local.get $zero))
        (local.set $o (i32.const 0))
        (block $eights_done
          (loop $eights
            (br_if $eights_done (i32.gt_u (i32.add (local.get $o) (i32.const 32)) (local.get $nb)))
            (local.set $acc0 (f32x4.add (local.get $acc0) (f32x4.mul
              (v128.load (i32.add (local.get $pa) (local.get $o))) (v128.load (i32.add (local.get $x) (local.get $o))))))
            (local.set $acc1 (f32x4.add (local.get $acc1) (f32x4.mul
              (v128.load offset=16 (i32.add (local.get $pa) (local.get $o)))
              (v128.load offset=16 (i32.add (local.get $x) (local.get $o))))))
            (local.set $o (i32.add (local.get $o) (i32.const 32)))
            (br $eights)))
        (if (i32.le_u (i32.add (local.get $o) (i32.const 16)) (local.get $nb))
          (then
            (local.set $acc0 (f32x4.add (local.get $acc0) (f32x4.mul
              (v128.load (i32.add (local.get $pa) (local.get $o))) (v128.load (i32.add (local.get $x) (local.get $o))))))
            (local.set $o (i32.add (local.get $o) (i32.const 16)))))
        (local.set $s (call $hsum (f32x4.add (local.get $acc0) (local.get $acc1))))
        (block $tail_done
          (loop $tail
            (br_if $tail_done (i32.ge_u (local.get $o) (local.get $nb)))
            (local.set $s (f32.add (local.get $s) (f32.mul
              (f32.load (i32.add (local.get $pa) (local.get $o))) (f32.load (i32.add (local.get $x) (local.get $o))))))
            (local.set $o (i32.add (local.get $o) (i32.const 4)))
            (br $tail)))
        (f32.store (i32.add (local.get $y) (i32.shl (local.get $row) (i32.const 2))) (local.get $s))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))

  ;; y[c] = b[c] (when has_bias, else 0) + sum over r < rows of x[r] A[r, c], for columns c0 <= c < c1 of
  ;; A (row stride lda values), r in order: a linear x @ W + b of a decoding step (W [in, out]), and
  ;; attention's weighted sum of the cached values. 16 columns at a time in four vector accumulators
  ;; (A read row by row, y written once), then 4 at a time, then one.
  (func (export "gemv_cols")
    (param $a i32) (param $lda i32) (param $x i32) (param $b i32) (param $y i32) (param $rows i32)
    (param $c0 i32) (param $c1 i32) (param $has_bias i32)
    (local $c i32) (local $r i32) (local $pa i32) (local $ldb i32) (local $xr v128) (local $zero v128)
    (local $acc0 v128) (local $acc1 v128) (local $acc2 v128) (local $acc3 v128) (local $s f32)
    (local.set $ldb (i32.shl (local.get $lda) (i32.const 2)))
    (local.set $c (local.get $c0))
    (block $sixteens_done
      (loop $sixteens
        (br_if $sixteens_done (i32.gt_u (i32.add (local.get $c) (i32.const 16)) (local.get $c1)))
        (if (local.get $has_bias)
          (then
            (local.set $acc0 (v128.load (i32.add (local.get $b) (i32.shl (local.get $c) (i32.const 2)))))
            (local.set $acc1 (v128.load offset=16 (i32.add (local.get $b) (i32.shl (local.get $c) (i32.const 2)))))
            (local.set $acc2 (v128.load offset=32 (i32.add (local.get $b) (i32.shl (local.get $c) (i32.const 2)))))
            (local.set $acc3 (v128.load offset=48 (i32.add (local.get $b) (i32.shl (local.get $c) (i32.const 2))))))
          (else
            (local.set $acc0 (local.get $zero)) (local.set $acc1 (local.get $zero))
            (local.set $acc2 (local.get $zero)) (local.set $acc3 (local.get $zero))))
        (local.set $pa (i32.add (local.get $a) (i32.shl (local.get $c) (i32.const 2))))
        (local.set $r (i32.const 0))
        (block $rs_done
          (loop $rs
            (br_if $rs_done (i32.ge_u (local.get $r) (local.get $rows)))
            (local.set $xr (v128.load32_splat (i32.add (local.get $x) (i32.shl (local.get $r) (i32.const 2)))))
            (local.set $acc0 (f32x4.add (local.get $acc0) (f32x4.mul (local.get $xr) (v128.load (local.get $pa)))))
            (local.set $acc1 (f32x4.add (local.get $acc1) (f32x4.mul (local.get $xr) (v128.load offset=16 (local.get $pa)))))
            (local.set $acc2 (f32x4.add (local.get $acc2) (f32x4.mul (local.get $xr) (v128.load offset=32 (local.get $pa)))))
            (local.set $acc3 (f32x4.add (local.get $acc3) (f32x4.mul (local.get $xr) (v128.load offset=48 (local.get $pa)))))
            (local.set $pa (i32.add (local.get $pa) (local.get $ldb)))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rs)))
        (v128.store (i32.add (local.get $y) (i32.shl (local.get $c) (i32.const 2))) (local.get $acc0))
        (v128.store offset=16 (i32.add (local.get $y) (i32.shl (local.get $c) (i32.const 2))) (local.get $acc1))
        (v128.store offset=32 (i32.add (local.get $y) (i32.shl (local.get $c) (i32.const 2))) (local.get $acc2))
        (v128.store offset=48 (i32.add (local.get $y) (i32.shl (local.get $c) (i32.const 2))) (local.get $acc3))
        (local.set $c (i32.add (local.get $c) (i32.const 16)))
        (br $sixteens)))
    (block $fours_done
      (loop $fours
        (br_if $fours_done (i32.gt_u (i32.add (local.get $c) (i32.const 4)) (local.get $c1)))
        (local.set $acc0 (local.get $zero))
        (if (local.get $has_bias)
          (then (local.set $acc0 (v128.load (i32.add (local.get $b) (i32.shl (local.get $c) (i32.const 2)))))))
        (local.set $pa (i32.add (local.get $a) (i32.shl (local.get $c) (i32.const 2))))
        (local.set $r (i32.const 0))
        (block $rs4_done
          (loop $rs4
            (br_if $rs4_done (i32.ge_u (local.get $r) (local.get $rows)))
            (local.set $acc0 (f32x4.add (local.get $acc0) (f32x4.mul
              (v128.load32_splat (i32.add (local.get $x) (i32.shl (local.get $r) (i32.const 2))))
              (v128.load (local.get $pa)))))
            (local.set $pa (i32.add (local.get $pa) (local.get $ldb)))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rs4)))
        (v128.store (i32.add (local.get $y) (i32.shl (local.get $c) (i32.const 2))) (local.get $acc0))
        (local.set $c (i32.add (local.get $c) (i32.const 4)))
        (br $fours)))
    (block $ones_done
      (loop $ones
        (br_if $ones_done (i32.ge_u (local.get $c) (local.get $c1)))
        (local.set $s (f32.const 0))
        (if (local.get $has_bias)
          (then (local.set $s (f32.load (i32.add (local.get $b) (i32.shl (local.get $c) (i32.const 2)))))))
        (local.set $pa (i32.add (local.get $a) (i32.shl (local.get $c) (i32.const 2))))
        (local.set $r (i32.const 0))
        (block $rs1_done
          (loop $rs1
            (br_if $rs1_done (i32.ge_u (local.get $r) (local.get $rows)))
            (local.set $s (f32.add (local.get $s) (f32.mul
              (f32.load (i32.add (local.get $x) (i32.shl (local.get $r) (i32.const 2)))) (f32.load (local.get $pa)))))
            (local.set $pa (i32.add (local.get $pa) (local.get $ldb)))
            (local.set $r (i32.add (local.get $r) (i32.const 1)))
            (br $rs1)))
        (f32.store (i32.add (local.get $y) (i32.shl (local.get $c) (i32.const 2))) (local.get $s))
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (br $ones))))

  ;; m[b] = the largest of x[16 b .. 16 b + 15] for blocks b < ceil(n / 16) (the last one ends at n), NaN
  ;; skipped (-Infinity for a block without a number): lib/top_k.ts blockMaxima, for the
  ;; logits of a decoding step. pmax(a, b) is b > a ? b : a, so a NaN never replaces the running maximum.
  (func (export "block_max") (param $x i32) (param $m i32) (param $n i32)
    (local $b i32) (local $p i32) (local $end i32) (local $v v128) (local $s f32) (local $t f32)
    (local $ninf v128)
    (local.set $ninf (f32x4.splat (f32.const -inf)))
    (local.set $p (local.get $x))
    (local.set $end (i32.add (local.get $x) (i32.shl (local.get $n) (i32.const 2))))
    (block $blocks_done
      (loop $blocks
        (br_if $blocks_done (i32.gt_u (i32.add (local.get $p) (i32.const 64)) (local.get $end)))
        (local.set $v (f32x4.pmax (f32x4.pmax (f32x4.pmax (f32x4.pmax (local.get $ninf)
          (v128.load (local.get $p))) (v128.load offset=16 (local.get $p)))
          (v128.load offset=32 (local.get $p))) (v128.load offset=48 (local.get $p))))
        ;; the lanes' maximum without branches: swap halves, then neighbours
        (local.set $v (f32x4.pmax (local.get $v)
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))))
        (local.set $v (f32x4.pmax (local.get $v)
          (i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 (local.get $v) (local.get $v))))
        (f32.store (i32.add (local.get $m) (i32.shl (local.get $b) (i32.const 2)))
          (f32x4.extract_lane 0 (local.get $v)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 64)))
        (br $blocks)))
    ;; the last, shorter block
    (if (i32.lt_u (local.get $p) (local.get $end))
      (then
        (local.set $s (f32.const -inf))
        (block $tail_done
          (loop $tail
            (br_if $tail_done (i32.ge_u (local.get $p) (local.get $end)))
            (local.set $t (f32.load (local.get $p)))
            (if (f32.gt (local.get $t) (local.get $s)) (then (local.set $s (local.get $t))))
            (local.set $p (i32.add (local.get $p) (i32.const 4)))
            (br $tail)))
        (f32.store (i32.add (local.get $m) (i32.shl (local.get $b) (i32.const 2))) (local.get $s)))))

  ;; round16: y[i] = x[i] * scale rounded to binary16 ($half = 1) or bfloat16 ($half = 0), ties to even, then
  ;; divided by scale (scale 1: neither), kept as float32; for i in [i0, i1), a multiple of 4 elements
  ;; (lib/tensor/ops/round16/wasm.ts rounds the last 1-3 in JavaScript). The same bit rules as there:
  ;; bfloat16 adds 0x7fff plus the lowest kept bit and clears 16 bits; binary16 does so on 13 bits in its
  ;; normal range, (|x| + 0.75) - 0.75 below 2^-14 (multiples of 2^-24), inf from 65520; inf and NaN stay.
  (func (export "round16") (param $x i32) (param $y i32) (param $i0 i32) (param $i1 i32) (param $half i32)
    (param $scale f32)
    (local $o i32) (local $end i32) (local $scaled i32)
    (local $u v128) (local $a v128) (local $r v128) (local $s v128) (local $sign v128) (local $sub v128)
    (local.set $s (f32x4.splat (local.get $scale)))
    (local.set $scaled (f32.ne (local.get $scale) (f32.const 1)))
    (local.set $o (i32.shl (local.get $i0) (i32.const 2)))
    (local.set $end (i32.shl (local.get $i1) (i32.const 2)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $o) (local.get $end)))
        (local.set $u (v128.load (i32.add (local.get $x) (local.get $o))))
        (if (local.get $scaled) (then (local.set $u (f32x4.mul (local.get $u) (local.get $s)))))
        (if (local.get $half)
          (then
            (local.set $sign (v128.and (local.get $u) (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000)))
            (local.set $a (v128.and (local.get $u) (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff)))
            (local.set $r
              (v128.and
                (i32x4.add
                  (i32x4.add (local.get $a) (v128.const i32x4 0xfff 0xfff 0xfff 0xfff))
                  (v128.and (i32x4.shr_u (local.get $a) (i32.const 13)) (v128.const i32x4 1 1 1 1)))
                (v128.const i32x4 0xffffe000 0xffffe000 0xffffe000 0xffffe000)))
            (local.set $sub
              (f32x4.sub (f32x4.add (local.get $a) (v128.const f32x4 0.75 0.75 0.75 0.75)) (v128.const f32x4 0.75 0.75 0.75 0.75)))
            (local.set $r
              (v128.bitselect (local.get $sub) (local.get $r)
                (i32x4.lt_s (local.get $a) (v128.const i32x4 0x38800000 0x38800000 0x38800000 0x38800000))))
            (local.set $r
              (v128.bitselect (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000) (local.get $r)
                (i32x4.ge_s (local.get $a) (v128.const i32x4 0x477ff000 0x477ff000 0x477ff000 0x477ff000))))
            (local.set $r (v128.or (local.get $r) (local.get $sign)))
            (local.set $r
              (v128.bitselect (local.get $u) (local.get $r)
                (i32x4.ge_s (local.get $a) (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000)))))
          (else
            (local.set $r
              (v128.and
                (i32x4.add
                  (i32x4.add (local.get $u) (v128.const i32x4 0x7fff 0x7fff 0x7fff 0x7fff))
                  (v128.and (i32x4.shr_u (local.get $u) (i32.const 16)) (v128.const i32x4 1 1 1 1)))
                (v128.const i32x4 0xffff0000 0xffff0000 0xffff0000 0xffff0000)))
            (local.set $r
              (v128.bitselect (local.get $u) (local.get $r)
                (i32x4.eq
                  (v128.and (local.get $u) (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))
                  (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))))))
        (if (local.get $scaled) (then (local.set $r (f32x4.div (local.get $r) (local.get $s)))))
        (v128.store (i32.add (local.get $y) (local.get $o)) (local.get $r))
        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $next))))

  ;; q16_head: the 16-bit integer copy of an output head for the decoding step's bounded head
  ;; (lib/models/gpt_decode_head.ts), rows r0 <= row < r1 of w [rows, n] (float32, n a multiple of 8):
  ;; s = max_j |w[row, j]| / q (1 for a row of zeros), out[row, j] = w[row, j] (1 / s) rounded to the
  ;; nearest integer and clamped to [-q, q] (q <= 32767), prm[row * 4] = s, and the float32 sums stats[row, 0..3] = sum |d|, sum d^2,
  ;; sum |w|, sum w^2 with d = w - s out (each rounded: the caller's bound allows for it). A weight that
  ;; is not finite makes the sums not finite: the caller then keeps the float32 head.
  (func (export "q16_head") (param $w i32) (param $out i32) (param $prm i32) (param $stats i32) (param $r0 i32)
    (param $r1 i32) (param $n i32) (param $q f32)
    (local $row i32) (local $pw i32) (local $po i32) (local $o i32) (local $nb i32) (local $ps i32)
    (local $u0 v128) (local $u1 v128) (local $q0 v128) (local $q1 v128) (local $d v128) (local $abs v128)
    (local $e1 v128) (local $e2 v128) (local $s1 v128) (local $w2 v128) (local $mx v128) (local $vs v128)
    (local $vinv v128) (local $hi v128) (local $lo v128) (local $m f32) (local $s f32) (local $magic v128)
    (local.set $abs (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff))
    (local.set $magic (v128.const f32x4 12582912 12582912 12582912 12582912))
    (local.set $hi (i32x4.splat (i32.trunc_f32_s (local.get $q))))
    (local.set $lo (i32x4.neg (local.get $hi)))
    (local.set $nb (i32.shl (local.get $n) (i32.const 2)))
    (local.set $row (local.get $r0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $r1)))
        (local.set $pw (i32.add (local.get $w) (i32.mul (local.get $row) (local.get $nb))))
        (local.set $po (i32.add (local.get $out) (i32.mul (local.get $row) (i32.shl (local.get $n) (i32.const 1)))))
        ;; the row's largest magnitude (pmax skips NaN; a NaN weight still makes its d, so the sums, NaN)
        (local.set $mx (v128.const i32x4 0 0 0 0))
        (local.set $o (i32.const 0))
        (block $max_done
          (loop $max
            (br_if $max_done (i32.ge_u (local.get $o) (local.get $nb)))
            (local.set $mx (f32x4.pmax (local.get $mx)
              (v128.and (v128.load (i32.add (local.get $pw) (local.get $o))) (local.get $abs))))
            (local.set $o (i32.add (local.get $o) (i32.const 16)))
            (br $max)))
        (local.set $m (f32.max (f32.max (f32x4.extract_lane 0 (local.get $mx)) (f32x4.extract_lane 1 (local.get $mx)))
          (f32.max (f32x4.extract_lane 2 (local.get $mx)) (f32x4.extract_lane 3 (local.get $mx)))))
        (local.set $s (f32.div (local.get $m) (local.get $q)))
        (if (f32.eq (local.get $s) (f32.const 0)) (then (local.set $s (f32.const 1))))
        (f32.store (i32.add (local.get $prm) (i32.shl (local.get $row) (i32.const 4))) (local.get $s))
        (local.set $vs (f32x4.splat (local.get $s)))
        (local.set $vinv (f32x4.splat (f32.div (f32.const 1) (local.get $s))))
        (local.set $e1 (v128.const i32x4 0 0 0 0))
        (local.set $e2 (v128.const i32x4 0 0 0 0))
        (local.set $s1 (v128.const i32x4 0 0 0 0))
        (local.set $w2 (v128.const i32x4 0 0 0 0))
        (local.set $o (i32.const 0))
        (block $eights_done
          (loop $eights
            (br_if $eights_done (i32.ge_u (local.get $o) (local.get $nb)))
            (local.set $u0 (v128.load (i32.add (local.get $pw) (local.get $o))))
            (local.set $u1 (v128.load offset=16 (i32.add (local.get $pw) (local.get $o))))
            ;; the nearest integer (ties to even) by adding 1.5 * 2^23: it lands in the low bits
            (local.set $q0 (i32x4.min_s (local.get $hi) (i32x4.max_s (local.get $lo) (i32x4.sub
              (f32x4.add (f32x4.mul (local.get $u0) (local.get $vinv)) (local.get $magic)) (local.get $magic)))))
            (local.set $q1 (i32x4.min_s (local.get $hi) (i32x4.max_s (local.get $lo) (i32x4.sub
              (f32x4.add (f32x4.mul (local.get $u1) (local.get $vinv)) (local.get $magic)) (local.get $magic)))))
            (v128.store (i32.add (local.get $po) (i32.shr_u (local.get $o) (i32.const 1)))
              (i16x8.narrow_i32x4_s (local.get $q0) (local.get $q1)))
            (local.set $q0 (f32x4.convert_i32x4_s (local.get $q0)))
            (local.set $q1 (f32x4.convert_i32x4_s (local.get $q1)))
            (local.set $d (f32x4.sub (local.get $u0) (f32x4.mul (local.get $vs) (local.get $q0))))
            (local.set $e1 (f32x4.add (local.get $e1) (v128.and (local.get $d) (local.get $abs))))
            (local.set $e2 (f32x4.add (local.get $e2) (f32x4.mul (local.get $d) (local.get $d))))
            (local.set $d (f32x4.sub (local.get $u1) (f32x4.mul (local.get $vs) (local.get $q1))))
            (local.set $e1 (f32x4.add (local.get $e1) (v128.and (local.get $d) (local.get $abs))))
            (local.set $e2 (f32x4.add (local.get $e2) (f32x4.mul (local.get $d) (local.get $d))))
            (local.set $s1 (f32x4.add (local.get $s1) (f32x4.add (v128.and (local.get $u0) (local.get $abs))
              (v128.and (local.get $u1) (local.get $abs)))))
            (local.set $w2 (f32x4.add (local.get $w2) (f32x4.add (f32x4.mul (local.get $u0) (local.get $u0))
              (f32x4.mul (local.get $u1) (local.get $u1)))))
            (local.set $o (i32.add (local.get $o) (i32.const 32)))
            (br $eights)))
        (local.set $ps (i32.add (local.get $stats) (i32.shl (local.get $row) (i32.const 4))))
        (f32.store (local.get $ps) (call $hsum (local.get $e1)))
        (f32.store offset=4 (local.get $ps) (call $hsum (local.get $e2)))
        (f32.store offset=8 (local.get $ps) (call $hsum (local.get $s1)))
        (f32.store offset=12 (local.get $ps) (call $hsum (local.get $w2)))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))

  ;; gemv_bound_q16: bounds on an output head's logits from its 16-bit integer copy (q16_head), rows
  ;; r0 <= row < r1: the integer dot product of the row with p (the head's input as 16-bit integers of
  ;; step sh), exact in int32 (the caller keeps n q_w q_h below 2^31), then a = float(dot) (s sh) with
  ;; s = prm[row * 4], r = min(m prm[row * 4 + 1], n2 prm[row * 4 + 2]) + 2^-100, lo[row] = a - r,
  ;; hi[row] = a + r (lib/models/gpt_decode_head.ts derives prm, m and n2 so that lo <= z <= hi for the
  ;; float32 logit z of gemv_rows). i32x4.dot_i16x8_s: eight products summed pairwise, four lanes.
  (func (export "gemv_bound_q16") (param $a i32) (param $p i32) (param $prm i32) (param $lo i32) (param $hi i32)
    (param $r0 i32) (param $r1 i32) (param $n i32) (param $sh f32) (param $m f32) (param $n2 f32)
    (local $row i32) (local $pa i32) (local $o i32) (local $nb i32) (local $pr i32)
    (local $acc0 v128) (local $acc1 v128) (local $s f32) (local $r f32)
    (local.set $nb (i32.shl (local.get $n) (i32.const 1)))
    (local.set $row (local.get $r0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $r1)))
        (local.set $pa (i32.add (local.get $a) (i32.mul (local.get $row) (local.get $nb))))
        (local.set $acc0 (v128.const i32x4 0 0 0 0))
        (local.set $acc1 (v128.const i32x4 0 0 0 0))
        (local.set $o (i32.const 0))
        (block $sixteens_done
          (loop $sixteens
            (br_if $sixteens_done (i32.gt_u (i32.add (local.get $o) (i32.const 32)) (local.get $nb)))
            (local.set $acc0 (i32x4.add (local.get $acc0) (i32x4.dot_i16x8_s
              (v128.load (i32.add (local.get $pa) (local.get $o))) (v128.load (i32.add (local.get $p) (local.get $o))))))
            (local.set $acc1 (i32x4.add (local.get $acc1) (i32x4.dot_i16x8_s
              (v128.load offset=16 (i32.add (local.get $pa) (local.get $o)))
              (v128.load offset=16 (i32.add (local.get $p) (local.get $o))))))
            (local.set $o (i32.add (local.get $o) (i32.const 32)))
            (br $sixteens)))
        (if (i32.lt_u (local.get $o) (local.get $nb))
          (then
            (local.set $acc0 (i32x4.add (local.get $acc0) (i32x4.dot_i16x8_s
              (v128.load (i32.add (local.get $pa) (local.get $o))) (v128.load (i32.add (local.get $p) (local.get $o))))))))
        (local.set $acc0 (i32x4.add (local.get $acc0) (local.get $acc1)))
        (local.set $pr (i32.add (local.get $prm) (i32.shl (local.get $row) (i32.const 4))))
        (local.set $s (f32.mul (f32.convert_i32_s (i32.add
          (i32.add (i32x4.extract_lane 0 (local.get $acc0)) (i32x4.extract_lane 1 (local.get $acc0)))
          (i32.add (i32x4.extract_lane 2 (local.get $acc0)) (i32x4.extract_lane 3 (local.get $acc0)))))
          (f32.mul (f32.load (local.get $pr)) (local.get $sh))))
        (local.set $r (f32.add (f32.min (f32.mul (local.get $m) (f32.load offset=4 (local.get $pr)))
          (f32.mul (local.get $n2) (f32.load offset=8 (local.get $pr)))) (f32.const 0x1p-100)))
        (f32.store (i32.add (local.get $lo) (i32.shl (local.get $row) (i32.const 2))) (f32.sub (local.get $s) (local.get $r)))
        (f32.store (i32.add (local.get $hi) (i32.shl (local.get $row) (i32.const 2))) (f32.add (local.get $s) (local.get $r)))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))

  ;; attn_fwd: causal attention y = softmax(scale q k^T, query i seeing keys 0..i) v of heads h0 <= hh < h1
  ;; (hh = b H + h), each T queries and keys of D values (lib/tensor/ops/attention/wasm.ts). q, k, v, y
  ;; are byte offsets of head 0 of batch 0; element d of row t of head h of batch b sits at
  ;; b ib + h ih + t ir + d (floats) in q, k and v, at b ob + h oh + t or + d in y, so the kernel reads
  ;; gpt's fused projection [B, T, 3C] and writes [B, T, C] as they lie. scr: (D + 4) T8 + 4 D floats
  ;; of scratch per head (T8 = T rounded up to 8): k^T [D, T8] (zero beyond T), the scores of four
  ;; query rows [4, T8], and their q values times scale, [D, 4].
  ;; Queries go four rows at a time: their scores against eight keys at a time (8 vector accumulators),
  ;; then per row the maximum, exp(s - max) in place and its sum, and y = (sum_j p_j v_j) / sum, 32,
  ;; 16, then 4 columns at a time and the last D mod 4 one by one. The products and sums use relaxed SIMD's
  ;; multiply-add, one fused rounding where the CPU has FMA (x86-64 with FMA3, arm64), two elsewhere: the
  ;; same on every thread of a machine, so results do not depend on which thread ran a head.
  (func (export "attn_fwd")
    (param $q i32) (param $k i32) (param $v i32) (param $y i32) (param $scr i32)
    (param $h0 i32) (param $h1 i32) (param $T i32) (param $H i32) (param $D i32)
    (param $ib i32) (param $ih i32) (param $ir i32) (param $ob i32) (param $oh i32) (param $or i32)
    (param $scale f32)
    (local $hh i32) (local $b i32) (local $h i32) (local $T8 i32) (local $rowb i32) (local $kstride i32)
    (local $qh i32) (local $kh i32) (local $vh i32) (local $yh i32) (local $kt i32) (local $sc i32) (local $qsp i32)
    (local $i0 i32) (local $r i32) (local $i i32) (local $j i32) (local $d i32) (local $n i32) (local $n8 i32)
    (local $p i32) (local $pk i32) (local $pq i32) (local $ps i32) (local $pe i32) (local $pv i32) (local $py i32)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $a4 v128) (local $a5 v128) (local $a6 v128) (local $a7 v128)
    (local $k0 v128) (local $k1 v128) (local $qv v128) (local $pj v128) (local $vsum v128)
    (local $mx f32) (local $sum f32) (local $acc f32)
    (local $t v128) (local $tiny v128) (local $kb v128)
    (local $min_t v128) (local $log2e v128) (local $round v128) (local $ln2_hi v128) (local $ln2_lo v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128) (local $c4 v128) (local $c5 v128)
    (local $one v128) (local $bias v128)
    (local.set $min_t (v128.const f32x4 -87.33654 -87.33654 -87.33654 -87.33654))
    (local.set $log2e (v128.const f32x4 1.44269504 1.44269504 1.44269504 1.44269504))
    (local.set $round (v128.const f32x4 12582912 12582912 12582912 12582912))
    (local.set $ln2_hi (v128.const f32x4 0.693359375 0.693359375 0.693359375 0.693359375))
    (local.set $ln2_lo (v128.const f32x4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4 -2.12194440e-4))
    (local.set $c0 (v128.const f32x4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4 1.9875691500e-4))
    (local.set $c1 (v128.const f32x4 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3 1.3981999507e-3))
    (local.set $c2 (v128.const f32x4 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3 8.3334519073e-3))
    (local.set $c3 (v128.const f32x4 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2 4.1665795894e-2))
    (local.set $c4 (v128.const f32x4 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1 1.6666665459e-1))
    (local.set $c5 (v128.const f32x4 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1 5.0000001201e-1))
    (local.set $one (v128.const f32x4 1 1 1 1))
    (local.set $bias (v128.const i32x4 127 127 127 127))
    (local.set $T8 (i32.and (i32.add (local.get $T) (i32.const 7)) (i32.const -8)))
    (local.set $rowb (i32.shl (local.get $ir) (i32.const 2)))
    (local.set $kstride (i32.shl (local.get $T8) (i32.const 2)))
    (local.set $hh (local.get $h0))
    (block $heads_done
      (loop $heads
        (br_if $heads_done (i32.ge_u (local.get $hh) (local.get $h1)))
        (local.set $b (i32.div_u (local.get $hh) (local.get $H)))
        (local.set $h (i32.rem_u (local.get $hh) (local.get $H)))
        (local.set $p (i32.shl (i32.add (i32.mul (local.get $b) (local.get $ib)) (i32.mul (local.get $h) (local.get $ih)))
          (i32.const 2)))
        (local.set $qh (i32.add (local.get $q) (local.get $p)))
        (local.set $kh (i32.add (local.get $k) (local.get $p)))
        (local.set $vh (i32.add (local.get $v) (local.get $p)))
        (local.set $yh (i32.add (local.get $y) (i32.shl (i32.add (i32.mul (local.get $b) (local.get $ob))
          (i32.mul (local.get $h) (local.get $oh))) (i32.const 2))))
        (local.set $kt (i32.add (local.get $scr) (i32.shl (i32.mul (local.get $hh)
          (i32.add (i32.mul (i32.add (local.get $D) (i32.const 4)) (local.get $T8)) (i32.shl (local.get $D) (i32.const 2))))
          (i32.const 2))))
        (local.set $sc (i32.add (local.get $kt) (i32.mul (local.get $D) (local.get $kstride))))
        (local.set $qsp (i32.add (local.get $sc) (i32.shl (local.get $kstride) (i32.const 2))))

        ;; k^T: kt[d, j] = k[j, d], zero for T <= j < T8
        (local.set $d (i32.const 0))
        (block $kt_done
          (loop $kt_d
            (br_if $kt_done (i32.ge_u (local.get $d) (local.get $D)))
            (local.set $pk (i32.add (local.get $kh) (i32.shl (local.get $d) (i32.const 2))))
            (local.set $p (i32.add (local.get $kt) (i32.mul (local.get $d) (local.get $kstride))))
            (local.set $pe (i32.add (local.get $p) (i32.shl (local.get $T) (i32.const 2))))
            (block $kt_j_done
              (loop $kt_j
                (br_if $kt_j_done (i32.ge_u (local.get $p) (local.get $pe)))
                (f32.store (local.get $p) (f32.load (local.get $pk)))
                (local.set $pk (i32.add (local.get $pk) (local.get $rowb)))
                (local.set $p (i32.add (local.get $p) (i32.const 4)))
                (br $kt_j)))
            (local.set $pe (i32.add (local.get $kt) (i32.mul (i32.add (local.get $d) (i32.const 1)) (local.get $kstride))))
            (block $kt_pad_done
              (loop $kt_pad
                (br_if $kt_pad_done (i32.ge_u (local.get $p) (local.get $pe)))
                (f32.store (local.get $p) (f32.const 0))
                (local.set $p (i32.add (local.get $p) (i32.const 4)))
                (br $kt_pad)))
            (local.set $d (i32.add (local.get $d) (i32.const 1)))
            (br $kt_d)))

        (local.set $i0 (i32.const 0))
        (block $blocks_done
          (loop $blocks
            (br_if $blocks_done (i32.ge_u (local.get $i0) (local.get $T)))
            ;; q of rows i0..i0+3 times scale, splatted (a row past T repeats row T - 1)
            (local.set $r (i32.const 0))
            (loop $qrows
              (local.set $i (i32.add (local.get $i0) (local.get $r)))
              (if (i32.ge_u (local.get $i) (local.get $T)) (then (local.set $i (i32.sub (local.get $T) (i32.const 1)))))
              (local.set $pq (i32.add (local.get $qh) (i32.mul (local.get $i) (local.get $rowb))))
              (local.set $p (i32.add (local.get $qsp) (i32.shl (local.get $r) (i32.const 2))))
              (local.set $d (i32.const 0))
              (block $qd_done
                (loop $qd
                  (br_if $qd_done (i32.ge_u (local.get $d) (local.get $D)))
                  (f32.store (local.get $p) (f32.mul (f32.load (local.get $pq)) (local.get $scale)))
                  (local.set $pq (i32.add (local.get $pq) (i32.const 4)))
                  (local.set $p (i32.add (local.get $p) (i32.const 16)))
                  (local.set $d (i32.add (local.get $d) (i32.const 1)))
                  (br $qd)))
              (local.set $r (i32.add (local.get $r) (i32.const 1)))
              (br_if $qrows (i32.lt_u (local.get $r) (i32.const 4))))
            ;; scores of the four rows against keys 0..n8 (n: keys the last of them sees)
            (local.set $n (i32.add (local.get $i0) (i32.const 4)))
            (if (i32.gt_u (local.get $n) (local.get $T)) (then (local.set $n (local.get $T))))
            (local.set $n8 (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8)))
            (local.set $j (i32.const 0))
            (block $keys_done
              (loop $keys
                (br_if $keys_done (i32.ge_u (local.get $j) (local.get $n8)))
                (local.set $a0 (v128.const f32x4 0 0 0 0)) (local.set $a1 (v128.const f32x4 0 0 0 0))
                (local.set $a2 (v128.const f32x4 0 0 0 0)) (local.set $a3 (v128.const f32x4 0 0 0 0))
                (local.set $a4 (v128.const f32x4 0 0 0 0)) (local.set $a5 (v128.const f32x4 0 0 0 0))
                (local.set $a6 (v128.const f32x4 0 0 0 0)) (local.set $a7 (v128.const f32x4 0 0 0 0))
                (local.set $pk (i32.add (local.get $kt) (i32.shl (local.get $j) (i32.const 2))))
                (local.set $pq (local.get $qsp))
                (local.set $pe (i32.add (local.get $qsp) (i32.shl (local.get $D) (i32.const 4))))
                (block $dots_done
                  (loop $dots
                    (br_if $dots_done (i32.ge_u (local.get $pq) (local.get $pe)))
                    (local.set $k0 (v128.load (local.get $pk)))
                    (local.set $k1 (v128.load offset=16 (local.get $pk)))
                    (local.set $qv (v128.load32_splat (local.get $pq)))
                    (local.set $a0 (f32x4.relaxed_madd (local.get $qv) (local.get $k0) (local.get $a0)))
                    (local.set $a1 (f32x4.relaxed_madd (local.get $qv) (local.get $k1) (local.get $a1)))
                    (local.set $qv (v128.load32_splat offset=4 (local.get $pq)))
                    (local.set $a2 (f32x4.relaxed_madd (local.get $qv) (local.get $k0) (local.get $a2)))
                    (local.set $a3 (f32x4.relaxed_madd (local.get $qv) (local.get $k1) (local.get $a3)))
                    (local.set $qv (v128.load32_splat offset=8 (local.get $pq)))
                    (local.set $a4 (f32x4.relaxed_madd (local.get $qv) (local.get $k0) (local.get $a4)))
                    (local.set $a5 (f32x4.relaxed_madd (local.get $qv) (local.get $k1) (local.get $a5)))
                    (local.set $qv (v128.load32_splat offset=12 (local.get $pq)))
                    (local.set $a6 (f32x4.relaxed_madd (local.get $qv) (local.get $k0) (local.get $a6)))
                    (local.set $a7 (f32x4.relaxed_madd (local.get $qv) (local.get $k1) (local.get $a7)))
                    (local.set $pk (i32.add (local.get $pk) (local.get $kstride)))
                    (local.set $pq (i32.add (local.get $pq) (i32.const 16)))
                    (br $dots)))
                (local.set $ps (i32.add (local.get $sc) (i32.shl (local.get $j) (i32.const 2))))
                (v128.store (local.get $ps) (local.get $a0))
                (v128.store offset=16 (local.get $ps) (local.get $a1))
                (local.set $ps (i32.add (local.get $ps) (local.get $kstride)))
                (v128.store (local.get $ps) (local.get $a2))
                (v128.store offset=16 (local.get $ps) (local.get $a3))
                (local.set $ps (i32.add (local.get $ps) (local.get $kstride)))
                (v128.store (local.get $ps) (local.get $a4))
                (v128.store offset=16 (local.get $ps) (local.get $a5))
                (local.set $ps (i32.add (local.get $ps) (local.get $kstride)))
                (v128.store (local.get $ps) (local.get $a6))
                (v128.store offset=16 (local.get $ps) (local.get $a7))
                (local.set $j (i32.add (local.get $j) (i32.const 8)))
                (br $keys)))

            ;; each row i of the block (i < T) sees keys 0..i: softmax over them, then y's row
            (local.set $r (i32.const 0))
            (block $rows_done
              (loop $rows
                (local.set $i (i32.add (local.get $i0) (local.get $r)))
                (br_if $rows_done (i32.or (i32.ge_u (local.get $r) (i32.const 4)) (i32.ge_u (local.get $i) (local.get $T))))
                (local.set $ps (i32.add (local.get $sc) (i32.mul (local.get $r) (local.get $kstride))))
                (local.set $n (i32.add (local.get $i) (i32.const 1)))
                (local.set $pe (i32.add (local.get $ps) (i32.shl (i32.and (i32.add (local.get $n) (i32.const 3)) (i32.const -4))
                  (i32.const 2))))
                ;; keys past i (up to the next multiple of 4) get -inf: exp gives 0 there
                (local.set $p (i32.add (local.get $ps) (i32.shl (local.get $n) (i32.const 2))))
                (block $mask_done
                  (loop $mask
                    (br_if $mask_done (i32.ge_u (local.get $p) (local.get $pe)))
                    (f32.store (local.get $p) (f32.const -inf))
                    (local.set $p (i32.add (local.get $p) (i32.const 4)))
                    (br $mask)))
                (local.set $a0 (v128.const f32x4 -inf -inf -inf -inf))
                (local.set $p (local.get $ps))
                (loop $max4
                  (local.set $a0 (f32x4.pmax (local.get $a0) (v128.load (local.get $p))))
                  (local.set $p (i32.add (local.get $p) (i32.const 16)))
                  (br_if $max4 (i32.lt_u (local.get $p) (local.get $pe))))
                (local.set $mx (f32.max
                  (f32.max (f32x4.extract_lane 0 (local.get $a0)) (f32x4.extract_lane 1 (local.get $a0)))
                  (f32.max (f32x4.extract_lane 2 (local.get $a0)) (f32x4.extract_lane 3 (local.get $a0)))))
                (local.set $qv (f32x4.splat (local.get $mx)))
                (local.set $vsum (v128.const f32x4 0 0 0 0))
                (local.set $p (local.get $ps))
                (loop $exp4
                  ;; exp(s - max) with multiply-adds: lanes below ln(FLT_MIN) give 0, the others
                  ;; t = k ln2 + r, e^r by Cephes' expf polynomial (softmax_rows' is a shorter one), times
                  ;; 2^k built in the exponent bits
                  (local.set $t (f32x4.sub (v128.load (local.get $p)) (local.get $qv)))
                  (local.set $tiny (f32x4.lt (local.get $t) (local.get $min_t)))
                  (local.set $t (f32x4.pmax (local.get $t) (local.get $min_t)))
                  (local.set $kb (f32x4.add (f32x4.mul (local.get $t) (local.get $log2e)) (local.get $round)))
                  (local.set $k0 (f32x4.sub (local.get $kb) (local.get $round)))
                  (local.set $k1 (f32x4.sub (local.get $t) (f32x4.mul (local.get $k0) (local.get $ln2_hi))))
                  (local.set $k1 (f32x4.sub (local.get $k1) (f32x4.mul (local.get $k0) (local.get $ln2_lo))))
                  (local.set $a0 (f32x4.relaxed_madd (local.get $c0) (local.get $k1) (local.get $c1)))
                  (local.set $a0 (f32x4.relaxed_madd (local.get $a0) (local.get $k1) (local.get $c2)))
                  (local.set $a0 (f32x4.relaxed_madd (local.get $a0) (local.get $k1) (local.get $c3)))
                  (local.set $a0 (f32x4.relaxed_madd (local.get $a0) (local.get $k1) (local.get $c4)))
                  (local.set $a0 (f32x4.relaxed_madd (local.get $a0) (local.get $k1) (local.get $c5)))
                  (local.set $a0 (f32x4.add (f32x4.relaxed_madd
                    (local.get $a0) (f32x4.mul (local.get $k1) (local.get $k1)) (local.get $k1)) (local.get $one)))
                  (local.set $a0 (v128.andnot (f32x4.mul (local.get $a0)
                    (i32x4.shl (i32x4.add (local.get $kb) (local.get $bias)) (i32.const 23))) (local.get $tiny)))
                  (v128.store (local.get $p) (local.get $a0))
                  (local.set $vsum (f32x4.add (local.get $vsum) (local.get $a0)))
                  (local.set $p (i32.add (local.get $p) (i32.const 16)))
                  (br_if $exp4 (i32.lt_u (local.get $p) (local.get $pe))))
                (local.set $sum (call $hsum (local.get $vsum)))
                (local.set $vsum (f32x4.splat (local.get $sum)))
                ;; y[i, d] = (sum_j p_j v[j, d]) / sum
                (local.set $pe (i32.add (local.get $ps) (i32.shl (local.get $n) (i32.const 2))))
                (local.set $py (i32.add (local.get $yh) (i32.shl (i32.mul (local.get $i) (local.get $or)) (i32.const 2))))
                (local.set $d (i32.const 0))
                (block $d32_done
                  (loop $d32
                    (br_if $d32_done (i32.gt_u (i32.add (local.get $d) (i32.const 32)) (local.get $D)))
                    (local.set $a0 (v128.const f32x4 0 0 0 0)) (local.set $a1 (v128.const f32x4 0 0 0 0))
                    (local.set $a2 (v128.const f32x4 0 0 0 0)) (local.set $a3 (v128.const f32x4 0 0 0 0))
                    (local.set $a4 (v128.const f32x4 0 0 0 0)) (local.set $a5 (v128.const f32x4 0 0 0 0))
                    (local.set $a6 (v128.const f32x4 0 0 0 0)) (local.set $a7 (v128.const f32x4 0 0 0 0))
                    (local.set $pv (i32.add (local.get $vh) (i32.shl (local.get $d) (i32.const 2))))
                    (local.set $p (local.get $ps))
                    (loop $pv32
                      (local.set $pj (v128.load32_splat (local.get $p)))
                      (local.set $a0 (f32x4.relaxed_madd (local.get $pj) (v128.load (local.get $pv)) (local.get $a0)))
                      (local.set $a1 (f32x4.relaxed_madd (local.get $pj) (v128.load offset=16 (local.get $pv)) (local.get $a1)))
                      (local.set $a2 (f32x4.relaxed_madd (local.get $pj) (v128.load offset=32 (local.get $pv)) (local.get $a2)))
                      (local.set $a3 (f32x4.relaxed_madd (local.get $pj) (v128.load offset=48 (local.get $pv)) (local.get $a3)))
                      (local.set $a4 (f32x4.relaxed_madd (local.get $pj) (v128.load offset=64 (local.get $pv)) (local.get $a4)))
                      (local.set $a5 (f32x4.relaxed_madd (local.get $pj) (v128.load offset=80 (local.get $pv)) (local.get $a5)))
                      (local.set $a6 (f32x4.relaxed_madd (local.get $pj) (v128.load offset=96 (local.get $pv)) (local.get $a6)))
                      (local.set $a7 (f32x4.relaxed_madd (local.get $pj) (v128.load offset=112 (local.get $pv)) (local.get $a7)))
                      (local.set $pv (i32.add (local.get $pv) (local.get $rowb)))
                      (local.set $p (i32.add (local.get $p) (i32.const 4)))
                      (br_if $pv32 (i32.lt_u (local.get $p) (local.get $pe))))
                    (local.set $p (i32.add (local.get $py) (i32.shl (local.get $d) (i32.const 2))))
                    (v128.store (local.get $p) (f32x4.div (local.get $a0) (local.get $vsum)))
                    (v128.store offset=16 (local.get $p) (f32x4.div (local.get $a1) (local.get $vsum)))
                    (v128.store offset=32 (local.get $p) (f32x4.div (local.get $a2) (local.get $vsum)))
                    (v128.store offset=48 (local.get $p) (f32x4.div (local.get $a3) (local.get $vsum)))
                    (v128.store offset=64 (local.get $p) (f32x4.div (local.get $a4) (local.get $vsum)))
                    (v128.store offset=80 (local.get $p) (f32x4.div (local.get $a5) (local.get $vsum)))
                    (v128.store offset=96 (local.get $p) (f32x4.div (local.get $a6) (local.get $vsum)))
                    (v128.store offset=112 (local.get $p) (f32x4.div (local.get $a7) (local.get $vsum)))
                    (local.set $d (i32.add (local.get $d) (i32.const 32)))
                    (br $d32)))
                (block $d16_done
                  (loop $d16
                    (br_if $d16_done (i32.gt_u (i32.add (local.get $d) (i32.const 16)) (local.get $D)))
                    (local.set $a0 (v128.const f32x4 0 0 0 0)) (local.set $a1 (v128.const f32x4 0 0 0 0))
                    (local.set $a2 (v128.const f32x4 0 0 0 0)) (local.set $a3 (v128.const f32x4 0 0 0 0))
                    (local.set $pv (i32.add (local.get $vh) (i32.shl (local.get $d) (i32.const 2))))
                    (local.set $p (local.get $ps))
                    (loop $pv16
                      (local.set $pj (v128.load32_splat (local.get $p)))
                      (local.set $a0 (f32x4.relaxed_madd (local.get $pj) (v128.load (local.get $pv)) (local.get $a0)))
                      (local.set $a1 (f32x4.relaxed_madd (local.get $pj) (v128.load offset=16 (local.get $pv)) (local.get $a1)))
                      (local.set $a2 (f32x4.relaxed_madd (local.get $pj) (v128.load offset=32 (local.get $pv)) (local.get $a2)))
                      (local.set $a3 (f32x4.relaxed_madd (local.get $pj) (v128.load offset=48 (local.get $pv)) (local.get $a3)))
                      (local.set $pv (i32.add (local.get $pv) (local.get $rowb)))
                      (local.set $p (i32.add (local.get $p) (i32.const 4)))
                      (br_if $pv16 (i32.lt_u (local.get $p) (local.get $pe))))
                    (local.set $p (i32.add (local.get $py) (i32.shl (local.get $d) (i32.const 2))))
                    (v128.store (local.get $p) (f32x4.div (local.get $a0) (local.get $vsum)))
                    (v128.store offset=16 (local.get $p) (f32x4.div (local.get $a1) (local.get $vsum)))
                    (v128.store offset=32 (local.get $p) (f32x4.div (local.get $a2) (local.get $vsum)))
                    (v128.store offset=48 (local.get $p) (f32x4.div (local.get $a3) (local.get $vsum)))
                    (local.set $d (i32.add (local.get $d) (i32.const 16)))
                    (br $d16)))
                (block $d4_done
                  (loop $d4
                    (br_if $d4_done (i32.gt_u (i32.add (local.get $d) (i32.const 4)) (local.get $D)))
                    (local.set $a0 (v128.const f32x4 0 0 0 0))
                    (local.set $pv (i32.add (local.get $vh) (i32.shl (local.get $d) (i32.const 2))))
                    (local.set $p (local.get $ps))
                    (loop $pv4
                      (local.set $a0 (f32x4.relaxed_madd (v128.load32_splat (local.get $p)) (v128.load (local.get $pv))
                        (local.get $a0)))
                      (local.set $pv (i32.add (local.get $pv) (local.get $rowb)))
                      (local.set $p (i32.add (local.get $p) (i32.const 4)))
                      (br_if $pv4 (i32.lt_u (local.get $p) (local.get $pe))))
                    (v128.store (i32.add (local.get $py) (i32.shl (local.get $d) (i32.const 2)))
                      (f32x4.div (local.get $a0) (local.get $vsum)))
                    (local.set $d (i32.add (local.get $d) (i32.const 4)))
                    (br $d4)))
                (block $d1_done
                  (loop $d1
                    (br_if $d1_done (i32.ge_u (local.get $d) (local.get $D)))
                    (local.set $acc (f32.const 0))
                    (local.set $pv (i32.add (local.get $vh) (i32.shl (local.get $d) (i32.const 2))))
                    (local.set $p (local.get $ps))
                    (loop $pv1
                      (local.set $acc (f32.add (local.get $acc) (f32.mul (f32.load (local.get $p)) (f32.load (local.get $pv)))))
                      (local.set $pv (i32.add (local.get $pv) (local.get $rowb)))
                      (local.set $p (i32.add (local.get $p) (i32.const 4)))
                      (br_if $pv1 (i32.lt_u (local.get $p) (local.get $pe))))
                    (f32.store (i32.add (local.get $py) (i32.shl (local.get $d) (i32.const 2)))
                      (f32.div (local.get $acc) (local.get $sum)))
                    (local.set $d (i32.add (local.get $d) (i32.const 1)))
                    (br $d1)))
                (local.set $r (i32.add (local.get $r) (i32.const 1)))
                (br $rows)))
            (local.set $i0 (i32.add (local.get $i0) (i32.const 4)))
            (br $blocks)))
        (local.set $hh (i32.add (local.get $hh) (i32.const 1)))
        (br $heads))))

  ;; Sums of squares for the global gradient norm (lib/optim.ts sumOfSquares): for blocks b0 <= b < b1 of
  ;; 8192 elements (kernel_calls.ts BLOCK) of x (n float32 values), part[b] = sum of ((x scale)^2) over the
  ;; block, as a float64 at byte offset part + 8 b. x scale is rounded to float32 as the op chain's multiply
  ;; is; its square and the sums are float64 (a float32 square is exact in float64), four lanes at a time in
  ;; two accumulators, their lanes added in a fixed order: the partial of a block does not depend on which
  ;; thread computed it. inf and NaN propagate (the loss scaler's overflow check).
  (func (export "sum_squares") (param $x i32) (param $part i32) (param $b0 i32) (param $b1 i32) (param $n i32)
    (param $scale f32)
    (local $b i32) (local $o i32) (local $end i32) (local $vend i32)
    (local $v v128) (local $lo v128) (local $hi v128) (local $acc0 v128) (local $acc1 v128) (local $vs v128)
    (local $f f64) (local $sum f64)
    (local.set $vs (f32x4.splat (local.get $scale)))
    (local.set $b (local.get $b0))
    (block $blocks_done
      (loop $blocks
        (br_if $blocks_done (i32.ge_s (local.get $b) (local.get $b1)))
        (local.set $o (i32.shl (local.get $b) (i32.const 15))) ;; 8192 values of 4 bytes
        (local.set $end (i32.shl (local.get $n) (i32.const 2)))
        (if (i32.lt_u (i32.add (local.get $o) (i32.const 32768)) (local.get $end))
          (then (local.set $end (i32.add (local.get $o) (i32.const 32768)))))
        (local.set $vend (i32.sub (local.get $end) (i32.const 12)))
        (local.set $acc0 (v128.const f64x2 0 0))
        (local.set $acc1 (v128.const f64x2 0 0))
        (block $vectors_done
          (loop $vectors
            (br_if $vectors_done (i32.ge_s (local.get $o) (local.get $vend)))
            (local.set $v (f32x4.mul (v128.load (i32.add (local.get $x) (local.get $o))) (local.get $vs)))
            (local.set $lo (f64x2.promote_low_f32x4 (local.get $v)))
            (local.set $hi (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))))
            (local.set $acc0 (f64x2.add (local.get $acc0) (f64x2.mul (local.get $lo) (local.get $lo))))
            (local.set $acc1 (f64x2.add (local.get $acc1) (f64x2.mul (local.get $hi) (local.get $hi))))
            (local.set $o (i32.add (local.get $o) (i32.const 16)))
            (br $vectors)))
        (local.set $acc0 (f64x2.add (local.get $acc0) (local.get $acc1)))
        (local.set $sum (f64.add (f64x2.extract_lane 0 (local.get $acc0)) (f64x2.extract_lane 1 (local.get $acc0))))
        (block $scalars_done
          (loop $scalars
            (br_if $scalars_done (i32.ge_s (local.get $o) (local.get $end)))
            (local.set $f (f64.promote_f32
              (f32.mul (f32.load (i32.add (local.get $x) (local.get $o))) (local.get $scale))))
            (local.set $sum (f64.add (local.get $sum) (f64.mul (local.get $f) (local.get $f))))
            (local.set $o (i32.add (local.get $o) (i32.const 4)))
            (br $scalars)))
        (f64.store (i32.add (local.get $part) (i32.shl (local.get $b) (i32.const 3))) (local.get $sum))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (br $blocks))))

  ;; Running sums along the middle axis of x [outer, T, inner] into y of the same shape, the order of
  ;; TF.js's Cumsum (y[t] = y[t - d] + x[t], in float32, one term at a time), so the bits are the same.
  ;; A row is one (outer index, block of up to 64 columns): row r is outer r / $blocks, columns from
  ;; (r % $blocks) * 64. $reverse 1 runs t from T - 1 down (d = -1); $exclusive 1 shifts by one (the first
  ;; sum is 0 and x[t] enters at t + d). The running sums live in y: the previous t's row is in cache.
  (func (export "cumsum") (param $x i32) (param $y i32) (param $r0 i32) (param $r1 i32) (param $T i32)
    (param $inner i32) (param $blocks i32) (param $exclusive i32) (param $reverse i32)
    (local $r i32) (local $base i32) (local $c0 i32) (local $c1 i32) (local $s i32) (local $row i32)
    (local $step i32) (local $xo i32) (local $yo i32) (local $prev i32) (local $c i32) (local $vend i32)
    (local $zero v128)
    (local.set $zero (v128.const f32x4 0 0 0 0))
    ;; bytes from one t to the next, in the direction of the sum
    (local.set $step (i32.shl (local.get $inner) (i32.const 2)))
    (if (local.get $reverse) (then (local.set $step (i32.sub (i32.const 0) (local.get $step)))))
    (local.set $r (local.get $r0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_s (local.get $r) (local.get $r1)))
        (local.set $c0 (i32.shl (i32.rem_u (local.get $r) (local.get $blocks)) (i32.const 6)))
        (local.set $c1 (i32.add (local.get $c0) (i32.const 64)))
        (if (i32.gt_u (local.get $c1) (local.get $inner)) (then (local.set $c1 (local.get $inner))))
        (local.set $vend (i32.sub (local.get $c1) (i32.const 3)))
        ;; byte offset of (outer, first t, c0)
        (local.set $base (i32.shl
          (i32.add
            (i32.mul (i32.div_u (local.get $r) (local.get $blocks)) (i32.mul (local.get $T) (local.get $inner)))
            (local.get $c0))
          (i32.const 2)))
        (if (local.get $reverse)
          (then (local.set $base (i32.add (local.get $base)
            (i32.shl (i32.mul (i32.sub (local.get $T) (i32.const 1)) (local.get $inner)) (i32.const 2))))))
        (local.set $s (i32.const 0))
        (local.set $row (local.get $base))
        (block $ts_done
          (loop $ts
            (br_if $ts_done (i32.ge_s (local.get $s) (local.get $T)))
            (local.set $yo (i32.add (local.get $y) (local.get $row)))
            (local.set $prev (i32.sub (local.get $yo) (local.get $step)))
            ;; the term entering at this t: x[t] (inclusive) or x[t - d] (exclusive)
            (local.set $xo (i32.add (local.get $x) (local.get $row)))
            (if (local.get $exclusive) (then (local.set $xo (i32.sub (local.get $xo) (local.get $step)))))
            (local.set $c (local.get $c0))
            (if (i32.and (i32.eqz (local.get $s)) (local.get $exclusive))
              (then
                ;; the first exclusive sum is 0
                (block $zv_done (loop $zv
                  (br_if $zv_done (i32.ge_s (local.get $c) (local.get $vend)))
                  (v128.store (local.get $yo) (local.get $zero))
                  (local.set $yo (i32.add (local.get $yo) (i32.const 16)))
                  (local.set $c (i32.add (local.get $c) (i32.const 4)))
                  (br $zv)))
                (block $zs_done (loop $zs
                  (br_if $zs_done (i32.ge_s (local.get $c) (local.get $c1)))
                  (f32.store (local.get $yo) (f32.const 0))
                  (local.set $yo (i32.add (local.get $yo) (i32.const 4)))
                  (local.set $c (i32.add (local.get $c) (i32.const 1)))
                  (br $zs))))
              (else
                (if (i32.eqz (local.get $s))
                  (then
                    ;; the first inclusive sum is x[t] itself, as TF.js forms it (-0 stays -0)
                    (block $fv_done (loop $fv
                      (br_if $fv_done (i32.ge_s (local.get $c) (local.get $vend)))
                      (v128.store (local.get $yo) (v128.load (local.get $xo)))
                      (local.set $yo (i32.add (local.get $yo) (i32.const 16)))
                      (local.set $xo (i32.add (local.get $xo) (i32.const 16)))
                      (local.set $c (i32.add (local.get $c) (i32.const 4)))
                      (br $fv)))
                    (block $fs_done (loop $fs
                      (br_if $fs_done (i32.ge_s (local.get $c) (local.get $c1)))
                      (f32.store (local.get $yo) (f32.load (local.get $xo)))
                      (local.set $yo (i32.add (local.get $yo) (i32.const 4)))
                      (local.set $xo (i32.add (local.get $xo) (i32.const 4)))
                      (local.set $c (i32.add (local.get $c) (i32.const 1)))
                      (br $fs))))
                  (else
                    (block $v_done (loop $v
                      (br_if $v_done (i32.ge_s (local.get $c) (local.get $vend)))
                      (v128.store (local.get $yo)
                        (f32x4.add (v128.load (local.get $prev)) (v128.load (local.get $xo))))
                      (local.set $yo (i32.add (local.get $yo) (i32.const 16)))
                      (local.set $prev (i32.add (local.get $prev) (i32.const 16)))
                      (local.set $xo (i32.add (local.get $xo) (i32.const 16)))
                      (local.set $c (i32.add (local.get $c) (i32.const 4)))
                      (br $v)))
                    (block $sc_done (loop $sc
                      (br_if $sc_done (i32.ge_s (local.get $c) (local.get $c1)))
                      (f32.store (local.get $yo) (f32.add (f32.load (local.get $prev)) (f32.load (local.get $xo))))
                      (local.set $yo (i32.add (local.get $yo) (i32.const 4)))
                      (local.set $prev (i32.add (local.get $prev) (i32.const 4)))
                      (local.set $xo (i32.add (local.get $xo) (i32.const 4)))
                      (local.set $c (i32.add (local.get $c) (i32.const 1)))
                      (br $sc)))))))
            (local.set $row (i32.add (local.get $row) (local.get $step)))
            (local.set $s (i32.add (local.get $s) (i32.const 1)))
            (br $ts)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $rows))))

  ;; Causal attention's softmax, rows r0 <= row < r1 of x [rows, K] into y (K = past + T keys; row
  ;; `row` is query row % T, at position past + row % T, seeing keys 0 .. past + row % T): the visible
  ;; prefix through softmax_rows (its exp and float64 row sum; m and s of each row land in stats [rows, 2]),
  ;; then times 1 / s, and the masked rest set to 0, which is what exp gives a score plus -1e9. As in the
  ;; op chain, a NaN or +Infinity among the masked scores makes the whole row NaN.
  (func (export "causal_softmax") (param $x i32) (param $y i32) (param $stats i32) (param $r0 i32)
    (param $r1 i32) (param $T i32) (param $K i32) (param $past i32)
    (local $row i32) (local $n i32) (local $p i32) (local $end i32) (local $vend i32) (local $inv f32)
    (local $vinv v128) (local $zero v128) (local $bad v128) (local $v v128) (local $inf v128) (local $dx i32)
    (local $f f32) (local $badf i32)
    (local.set $zero (v128.const f32x4 0 0 0 0))
    (local.set $inf (v128.const f32x4 inf inf inf inf))
    (local.set $dx (i32.sub (local.get $x) (local.get $y)))
    (local.set $row (local.get $r0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $r1)))
        (local.set $n (i32.add (i32.add (local.get $past) (i32.rem_u (local.get $row) (local.get $T))) (i32.const 1)))
        (if (i32.gt_u (local.get $n) (local.get $K)) (then (local.set $n (local.get $K))))
        (local.set $p (i32.shl (i32.mul (local.get $row) (local.get $K)) (i32.const 2)))
        (call $softmax_rows
          (i32.add (local.get $x) (local.get $p))
          (i32.add (local.get $y) (local.get $p))
          (i32.add (local.get $stats) (i32.shl (local.get $row) (i32.const 3)))
          (i32.add (local.get $stats) (i32.add (i32.shl (local.get $row) (i32.const 3)) (i32.const 4)))
          (i32.const 0) (i32.const 1) (local.get $n) (i32.const 1))
        (local.set $inv (f32.div (f32.const 1)
          (f32.load offset=4 (i32.add (local.get $stats) (i32.shl (local.get $row) (i32.const 3))))))
        (local.set $vinv (f32x4.splat (local.get $inv)))
        (local.set $p (i32.add (local.get $y) (local.get $p)))
        (local.set $end (i32.add (local.get $p) (i32.shl (local.get $n) (i32.const 2))))
        (local.set $vend (i32.sub (local.get $end) (i32.const 12)))
        (block $v_done (loop $v
          (br_if $v_done (i32.ge_s (local.get $p) (local.get $vend)))
          (v128.store (local.get $p) (f32x4.mul (v128.load (local.get $p)) (local.get $vinv)))
          (local.set $p (i32.add (local.get $p) (i32.const 16)))
          (br $v)))
        (block $s_done (loop $sc
          (br_if $s_done (i32.ge_s (local.get $p) (local.get $end)))
          (f32.store (local.get $p) (f32.mul (f32.load (local.get $p)) (local.get $inv)))
          (local.set $p (i32.add (local.get $p) (i32.const 4)))
          (br $sc)))
        ;; the masked keys: 0, while looking for a NaN or +Infinity among their scores (x is dx bytes on)
        (local.set $end (i32.add (local.get $y)
          (i32.shl (i32.mul (i32.add (local.get $row) (i32.const 1)) (local.get $K)) (i32.const 2))))
        (local.set $vend (i32.sub (local.get $end) (i32.const 12)))
        (local.set $bad (local.get $zero))
        ;; a NaN or +Infinity among the visible scores made their sum NaN
        (local.set $badf (f32.ne (local.get $inv) (local.get $inv)))
        (block $zv_done (loop $zv
          (br_if $zv_done (i32.ge_s (local.get $p) (local.get $vend)))
          (local.set $v (v128.load (i32.add (local.get $p) (local.get $dx))))
          (local.set $bad (v128.or (local.get $bad)
            (v128.or (f32x4.ne (local.get $v) (local.get $v)) (f32x4.eq (local.get $v) (local.get $inf)))))
          (v128.store (local.get $p) (local.get $zero))
          (local.set $p (i32.add (local.get $p) (i32.const 16)))
          (br $zv)))
        (block $zs_done (loop $zs
          (br_if $zs_done (i32.ge_s (local.get $p) (local.get $end)))
          (local.set $f (f32.load (i32.add (local.get $p) (local.get $dx))))
          (local.set $badf (i32.or (local.get $badf)
            (i32.or (f32.ne (local.get $f) (local.get $f)) (f32.eq (local.get $f) (f32.const inf)))))
          (f32.store (local.get $p) (f32.const 0))
          (local.set $p (i32.add (local.get $p) (i32.const 4)))
          (br $zs)))
        (if (i32.or (v128.any_true (local.get $bad)) (local.get $badf))
          (then
            ;; the whole row NaN
            (local.set $p (i32.sub (local.get $end) (i32.shl (local.get $K) (i32.const 2))))
            (block $nan_done (loop $nan
              (br_if $nan_done (i32.ge_s (local.get $p) (local.get $end)))
              (f32.store (local.get $p) (f32.const nan))
              (local.set $p (i32.add (local.get $p) (i32.const 4)))
              (br $nan)))))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))

  ;; The softmax gradient of rows r0 <= row < r1 of y, dy [rows, K] into dx: dy y - (sum of dy y) y, the
  ;; op chain's float32 operations, the row's sum taken in float32 vectors and then across their lanes.
  (func (export "softmax_grad") (param $y i32) (param $dy i32) (param $dx i32) (param $r0 i32) (param $r1 i32)
    (param $K i32)
    (local $row i32) (local $o i32) (local $end i32) (local $vend i32) (local $acc v128) (local $d f32)
    (local $vd v128) (local $v v128)
    (local.set $row (local.get $r0))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $r1)))
        (local.set $o (i32.shl (i32.mul (local.get $row) (local.get $K)) (i32.const 2)))
        (local.set $end (i32.add (local.get $o) (i32.shl (local.get $K) (i32.const 2))))
        (local.set $vend (i32.sub (local.get $end) (i32.const 12)))
        (local.set $acc (v128.const f32x4 0 0 0 0))
        (block $sv_done (loop $sv
          (br_if $sv_done (i32.ge_s (local.get $o) (local.get $vend)))
          (local.set $acc (f32x4.add (local.get $acc) (f32x4.mul
            (v128.load (i32.add (local.get $dy) (local.get $o))) (v128.load (i32.add (local.get $y) (local.get $o))))))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (br $sv)))
        (local.set $d (f32.add
          (f32.add (f32x4.extract_lane 0 (local.get $acc)) (f32x4.extract_lane 1 (local.get $acc)))
          (f32.add (f32x4.extract_lane 2 (local.get $acc)) (f32x4.extract_lane 3 (local.get $acc)))))
        (block $ss_done (loop $ss
          (br_if $ss_done (i32.ge_s (local.get $o) (local.get $end)))
          (local.set $d (f32.add (local.get $d) (f32.mul
            (f32.load (i32.add (local.get $dy) (local.get $o))) (f32.load (i32.add (local.get $y) (local.get $o))))))
          (local.set $o (i32.add (local.get $o) (i32.const 4)))
          (br $ss)))
        (local.set $vd (f32x4.splat (local.get $d)))
        (local.set $o (i32.shl (i32.mul (local.get $row) (local.get $K)) (i32.const 2)))
        (block $gv_done (loop $gv
          (br_if $gv_done (i32.ge_s (local.get $o) (local.get $vend)))
          (local.set $v (v128.load (i32.add (local.get $y) (local.get $o))))
          (v128.store (i32.add (local.get $dx) (local.get $o)) (f32x4.sub
            (f32x4.mul (v128.load (i32.add (local.get $dy) (local.get $o))) (local.get $v))
            (f32x4.mul (local.get $vd) (local.get $v))))
          (local.set $o (i32.add (local.get $o) (i32.const 16)))
          (br $gv)))
        (block $gs_done (loop $gs
          (br_if $gs_done (i32.ge_s (local.get $o) (local.get $end)))
          (f32.store (i32.add (local.get $dx) (local.get $o)) (f32.sub
            (f32.mul (f32.load (i32.add (local.get $dy) (local.get $o))) (f32.load (i32.add (local.get $y) (local.get $o))))
            (f32.mul (local.get $d) (f32.load (i32.add (local.get $y) (local.get $o))))))
          (local.set $o (i32.add (local.get $o) (i32.const 4)))
          (br $gs)))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $rows))))

  ;; y = erf(x s) for elements i0 <= i < i1 (byte offsets x, y; may be equal): exact GELU's erf term,
  ;; s = 1/sqrt 2 as a float32. erf is the rational fit x P(x^2) / Q(x^2), P of degree 6 and Q of
  ;; degree 4 (the float erf of Eigen and XLA), on x s clamped to [-4, 4], where erf rounds to +-1.
  ;; The fit's own error is under 7e-8; evaluated in float32 its Horner steps' roundings add up to ~7
  ;; ulp (4e-7) near +-1, so it is evaluated in float64, two lanes at a time, and rounded once at the
  ;; end. NaN stays NaN (pmin/pmax keep it), +-Infinity gives +-1, -0 gives -0.
  (func (export "erf") (param $x i32) (param $y i32) (param $i0 i32) (param $i1 i32) (param $s f32)
    (local $o i32) (local $end i32) (local $left i32)
    (local $v v128) (local $lo v128) (local $hi v128) (local $z v128) (local $p v128) (local $q v128)
    (local $vs v128) (local $four v128) (local $nfour v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128) (local $a4 v128) (local $a5 v128) (local $a6 v128)
    (local $b0 v128) (local $b1 v128) (local $b2 v128) (local $b3 v128) (local $b4 v128)
    (local.set $a0 (v128.const f64x2 -2.72614225801306e-10 -2.72614225801306e-10))
    (local.set $a1 (v128.const f64x2 2.77068142495902e-08 2.77068142495902e-08))
    (local.set $a2 (v128.const f64x2 -2.10102402082508e-06 -2.10102402082508e-06))
    (local.set $a3 (v128.const f64x2 -5.69250639462346e-05 -5.69250639462346e-05))
    (local.set $a4 (v128.const f64x2 -7.34990630326855e-04 -7.34990630326855e-04))
    (local.set $a5 (v128.const f64x2 -2.95459980854025e-03 -2.95459980854025e-03))
    (local.set $a6 (v128.const f64x2 -1.60960333262415e-02 -1.60960333262415e-02))
    (local.set $b0 (v128.const f64x2 -1.45660718464996e-05 -1.45660718464996e-05))
    (local.set $b1 (v128.const f64x2 -2.13374055278905e-04 -2.13374055278905e-04))
    (local.set $b2 (v128.const f64x2 -1.68282697438203e-03 -1.68282697438203e-03))
    (local.set $b3 (v128.const f64x2 -7.37332916720468e-03 -7.37332916720468e-03))
    (local.set $b4 (v128.const f64x2 -1.42647390514189e-02 -1.42647390514189e-02))
    (local.set $vs (f32x4.splat (local.get $s)))
    (local.set $four (v128.const f32x4 4 4 4 4))
    (local.set $nfour (v128.const f32x4 -4 -4 -4 -4))
    (local.set $o (i32.shl (local.get $i0) (i32.const 2)))
    (local.set $end (i32.shl (local.get $i1) (i32.const 2)))
    (block $done
      (loop $vectors
        (br_if $done (i32.ge_s (local.get $o) (local.get $end)))
        ;; the last 1-3 elements go through as one vector padded with zeros (not stored)
        (local.set $left (i32.sub (local.get $end) (local.get $o)))
        (if (i32.ge_u (local.get $left) (i32.const 16))
          (then (local.set $v (v128.load (i32.add (local.get $x) (local.get $o)))))
          (else
            (local.set $v (v128.load32_lane 0 (i32.add (local.get $x) (local.get $o)) (v128.const i32x4 0 0 0 0)))
            (if (i32.ge_u (local.get $left) (i32.const 8))
              (then (local.set $v (v128.load32_lane offset=4 1 (i32.add (local.get $x) (local.get $o)) (local.get $v)))))
            (if (i32.ge_u (local.get $left) (i32.const 12))
              (then (local.set $v (v128.load32_lane offset=8 2 (i32.add (local.get $x) (local.get $o)) (local.get $v)))))))
        (local.set $v (f32x4.pmax (f32x4.pmin (f32x4.mul (local.get $v) (local.get $vs)) (local.get $four))
          (local.get $nfour)))
        (local.set $lo (f64x2.promote_low_f32x4 (local.get $v)))
        (local.set $hi (f64x2.promote_low_f32x4
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))))
        (local.set $z (f64x2.mul (local.get $lo) (local.get $lo)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $a0) (local.get $z)) (local.get $a1)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $z)) (local.get $a2)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $z)) (local.get $a3)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $z)) (local.get $a4)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $z)) (local.get $a5)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $z)) (local.get $a6)))
        (local.set $q (f64x2.add (f64x2.mul (local.get $b0) (local.get $z)) (local.get $b1)))
        (local.set $q (f64x2.add (f64x2.mul (local.get $q) (local.get $z)) (local.get $b2)))
        (local.set $q (f64x2.add (f64x2.mul (local.get $q) (local.get $z)) (local.get $b3)))
        (local.set $q (f64x2.add (f64x2.mul (local.get $q) (local.get $z)) (local.get $b4)))
        (local.set $lo (f64x2.div (f64x2.mul (local.get $lo) (local.get $p)) (local.get $q)))
        (local.set $z (f64x2.mul (local.get $hi) (local.get $hi)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $a0) (local.get $z)) (local.get $a1)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $z)) (local.get $a2)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $z)) (local.get $a3)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $z)) (local.get $a4)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $z)) (local.get $a5)))
        (local.set $p (f64x2.add (f64x2.mul (local.get $p) (local.get $z)) (local.get $a6)))
        (local.set $q (f64x2.add (f64x2.mul (local.get $b0) (local.get $z)) (local.get $b1)))
        (local.set $q (f64x2.add (f64x2.mul (local.get $q) (local.get $z)) (local.get $b2)))
        (local.set $q (f64x2.add (f64x2.mul (local.get $q) (local.get $z)) (local.get $b3)))
        (local.set $q (f64x2.add (f64x2.mul (local.get $q) (local.get $z)) (local.get $b4)))
        (local.set $hi (f64x2.div (f64x2.mul (local.get $hi) (local.get $p)) (local.get $q)))
        (local.set $v (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
          (f32x4.demote_f64x2_zero (local.get $lo)) (f32x4.demote_f64x2_zero (local.get $hi))))
        (if (i32.ge_u (local.get $left) (i32.const 16))
          (then (v128.store (i32.add (local.get $y) (local.get $o)) (local.get $v)))
          (else
            (v128.store32_lane 0 (i32.add (local.get $y) (local.get $o)) (local.get $v))
            (if (i32.ge_u (local.get $left) (i32.const 8))
              (then (v128.store32_lane offset=4 1 (i32.add (local.get $y) (local.get $o)) (local.get $v))))
            (if (i32.ge_u (local.get $left) (i32.const 12))
              (then (v128.store32_lane offset=8 2 (i32.add (local.get $y) (local.get $o)) (local.get $v))))))
        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $vectors))))

  ;; Exact GELU backward, from e = erf(x / sqrt 2) (the erf export): phi = exp((x x) -0.5) r, r =
  ;; 1/sqrt(2 pi) as a float32, dx = dy (((e + 1) 0.5) + x phi), ops/gelu/mod.ts's op chain's float32
  ;; operations in its order. exp is softmax_rows's (its argument is <= 0 here), with the multiply-adds
  ;; as a multiply and an add. e may be dx.
  (func (export "gelu_erf_grad_out")
    (param $x i32) (param $e i32) (param $dy i32) (param $dx i32) (param $i0 i32) (param $i1 i32) (param $rs f32)
    (local $o i32) (local $end i32) (local $left i32)
    (local $v v128) (local $ev v128) (local $dv v128) (local $t v128) (local $kb v128) (local $k v128)
    (local $r v128) (local $y v128)
    (local $vr v128) (local $nhalf v128) (local $half v128) (local $min_t v128) (local $log2e v128)
    (local $round v128) (local $nln2_hi v128) (local $nln2_lo v128)
    (local $q1 v128) (local $q2 v128) (local $q3 v128) (local $q4 v128) (local $q5 v128)
    (local $one v128) (local $bias v128)
    (local.set $vr (f32x4.splat (local.get $rs)))
    (local.set $nhalf (v128.const f32x4 -0.5 -0.5 -0.5 -0.5))
    (local.set $half (v128.const f32x4 0.5 0.5 0.5 0.5))
    (local.set $min_t (v128.const f32x4 -88 -88 -88 -88))
    (local.set $log2e (v128.const f32x4 1.44269504 1.44269504 1.44269504 1.44269504))
    (local.set $round (v128.const f32x4 12582912 12582912 12582912 12582912))
    (local.set $nln2_hi (v128.const f32x4 -0.693359375 -0.693359375 -0.693359375 -0.693359375))
    (local.set $nln2_lo (v128.const f32x4 2.12194440e-4 2.12194440e-4 2.12194440e-4 2.12194440e-4))
    (local.set $q1 (v128.const f32x4 0.49999994 0.49999994 0.49999994 0.49999994))
    (local.set $q2 (v128.const f32x4 0.16666432 0.16666432 0.16666432 0.16666432))
    (local.set $q3 (v128.const f32x4 0.041668 0.041668 0.041668 0.041668))
    (local.set $q4 (v128.const f32x4 0.00837417 0.00837417 0.00837417 0.00837417))
    (local.set $q5 (v128.const f32x4 0.0013843622 0.0013843622 0.0013843622 0.0013843622))
    (local.set $one (v128.const f32x4 1 1 1 1))
    (local.set $bias (v128.const i32x4 127 127 127 127))
    (local.set $o (i32.shl (local.get $i0) (i32.const 2)))
    (local.set $end (i32.shl (local.get $i1) (i32.const 2)))
    (block $done
      (loop $vectors
        (br_if $done (i32.ge_s (local.get $o) (local.get $end)))
        ;; the last 1-3 elements go through as vectors padded with zeros (not stored)
        (local.set $left (i32.sub (local.get $end) (local.get $o)))
        (if (i32.ge_u (local.get $left) (i32.const 16))
          (then
            (local.set $v (v128.load (i32.add (local.get $x) (local.get $o))))
            (local.set $ev (v128.load (i32.add (local.get $e) (local.get $o))))
            (local.set $dv (v128.load (i32.add (local.get $dy) (local.get $o)))))
          (else
            (local.set $v (v128.load32_lane 0 (i32.add (local.get $x) (local.get $o)) (v128.const i32x4 0 0 0 0)))
            (local.set $ev (v128.load32_lane 0 (i32.add (local.get $e) (local.get $o)) (v128.const i32x4 0 0 0 0)))
            (local.set $dv (v128.load32_lane 0 (i32.add (local.get $dy) (local.get $o)) (v128.const i32x4 0 0 0 0)))
            (if (i32.ge_u (local.get $left) (i32.const 8))
              (then
                (local.set $v (v128.load32_lane offset=4 1 (i32.add (local.get $x) (local.get $o)) (local.get $v)))
                (local.set $ev (v128.load32_lane offset=4 1 (i32.add (local.get $e) (local.get $o)) (local.get $ev)))
                (local.set $dv (v128.load32_lane offset=4 1 (i32.add (local.get $dy) (local.get $o)) (local.get $dv)))))
            (if (i32.ge_u (local.get $left) (i32.const 12))
              (then
                (local.set $v (v128.load32_lane offset=8 2 (i32.add (local.get $x) (local.get $o)) (local.get $v)))
                (local.set $ev (v128.load32_lane offset=8 2 (i32.add (local.get $e) (local.get $o)) (local.get $ev)))
                (local.set $dv (v128.load32_lane offset=8 2 (i32.add (local.get $dy) (local.get $o)) (local.get $dv)))))))
        ;; exp(t), t = (x x) -0.5 clamped at -88 (a NaN t stays NaN)
        (local.set $t (f32x4.pmax (f32x4.mul (f32x4.mul (local.get $v) (local.get $v)) (local.get $nhalf))
          (local.get $min_t)))
        (local.set $kb (f32x4.add (f32x4.mul (local.get $t) (local.get $log2e)) (local.get $round)))
        (local.set $k (f32x4.sub (local.get $kb) (local.get $round)))
        (local.set $r (f32x4.add (f32x4.mul (local.get $k) (local.get $nln2_hi)) (local.get $t)))
        (local.set $r (f32x4.add (f32x4.mul (local.get $k) (local.get $nln2_lo)) (local.get $r)))
        (local.set $y (f32x4.add (f32x4.mul (local.get $q5) (local.get $r)) (local.get $q4)))
        (local.set $y (f32x4.add (f32x4.mul (local.get $y) (local.get $r)) (local.get $q3)))
        (local.set $y (f32x4.add (f32x4.mul (local.get $y) (local.get $r)) (local.get $q2)))
        (local.set $y (f32x4.add (f32x4.mul (local.get $y) (local.get $r)) (local.get $q1)))
        (local.set $y (f32x4.add (f32x4.mul (local.get $y) (local.get $r)) (local.get $one)))
        (local.set $y (f32x4.add (f32x4.mul (local.get $y) (local.get $r)) (local.get $one)))
        (local.set $y (f32x4.mul (local.get $y)
          (i32x4.shl (i32x4.add (local.get $kb) (local.get $bias)) (i32.const 23))))
        ;; dx = dy (((e + 1) 0.5) + x (exp(t) r))
        (local.set $v (f32x4.mul (local.get $dv) (f32x4.add
          (f32x4.mul (f32x4.add (local.get $ev) (local.get $one)) (local.get $half))
          (f32x4.mul (local.get $v) (f32x4.mul (local.get $y) (local.get $vr))))))
        (if (i32.ge_u (local.get $left) (i32.const 16))
          (then (v128.store (i32.add (local.get $dx) (local.get $o)) (local.get $v)))
          (else
            (v128.store32_lane 0 (i32.add (local.get $dx) (local.get $o)) (local.get $v))
            (if (i32.ge_u (local.get $left) (i32.const 8))
              (then (v128.store32_lane offset=4 1 (i32.add (local.get $dx) (local.get $o)) (local.get $v))))
            (if (i32.ge_u (local.get $left) (i32.const 12))
              (then (v128.store32_lane offset=8 2 (i32.add (local.get $dx) (local.get $o)) (local.get $v))))))
        (local.set $o (i32.add (local.get $o) (i32.const 16)))
        (br $vectors))))

  ;; Column sums of x [rows, cols] into y [cols], for groups g0 <= g < g1 of 16 columns (the last group may
  ;; be narrower): each column's values added in float64 from row 0 down, then rounded once (the gradient
  ;; of a bias, summing dy over its rows). A whole group is one 64-byte line per row, eight float64x2 sums.
  (func (export "col_sums") (param $x i32) (param $y i32) (param $g0 i32) (param $g1 i32) (param $rows i32)
    (param $cols i32)
    (call $col_sums_scaled (local.get $x) (local.get $y) (local.get $g0) (local.get $g1) (local.get $rows)
      (local.get $cols) (f64.const 1)))

  ;; The per-channel means of images r0 <= n < r1 of x [N, P, C] (P pixels) into y [N, C]: each image's
  ;; column sums as col_sums takes them, times 1 / P in float64, rounded once (the CNNs' global average pool).
  (func (export "image_means") (param $x i32) (param $y i32) (param $r0 i32) (param $r1 i32) (param $P i32)
    (param $C i32)
    (local $inv f64)
    (local.set $inv (f64.div (f64.const 1) (f64.convert_i32_u (local.get $P))))
    (block $done
      (loop $images
        (br_if $done (i32.ge_u (local.get $r0) (local.get $r1)))
        (call $col_sums_scaled
          (i32.add (local.get $x) (i32.shl (i32.mul (i32.mul (local.get $r0) (local.get $P)) (local.get $C)) (i32.const 2)))
          (i32.add (local.get $y) (i32.shl (i32.mul (local.get $r0) (local.get $C)) (i32.const 2)))
          (i32.const 0) (i32.shr_u (i32.add (local.get $C) (i32.const 15)) (i32.const 4))
          (local.get $P) (local.get $C) (local.get $inv))
        (local.set $r0 (i32.add (local.get $r0) (i32.const 1)))
        (br $images))))

  ;; col_sums with each sum times $scale (float64) before its one rounding.
  (func $col_sums_scaled (param $x i32) (param $y i32) (param $g0 i32) (param $g1 i32) (param $rows i32)
    (param $cols i32) (param $scale f64)
    (local $vscale v128)
    (local $g i32) (local $c i32) (local $n i32) (local $r i32) (local $p i32) (local $q i32) (local $stride i32)
    (local $v v128) (local $acc f64)
    (local $s0 v128) (local $s1 v128) (local $s2 v128) (local $s3 v128) (local $s4 v128) (local $s5 v128) (local $s6 v128) (local $s7 v128)
    (local.set $vscale (f64x2.splat (local.get $scale)))
    (local.set $stride (i32.shl (local.get $cols) (i32.const 2)))
    (local.set $g (local.get $g0))
    (block $groups_done
      (loop $groups
        (br_if $groups_done (i32.ge_u (local.get $g) (local.get $g1)))
        (local.set $c (i32.shl (local.get $g) (i32.const 4)))
        (local.set $n (i32.sub (local.get $cols) (local.get $c)))
        (local.set $q (i32.add (local.get $y) (i32.shl (local.get $c) (i32.const 2))))
        (if (i32.ge_u (local.get $n) (i32.const 16))
          (then
        (local.set $s0 (v128.const f64x2 0 0))
        (local.set $s1 (v128.const f64x2 0 0))
        (local.set $s2 (v128.const f64x2 0 0))
        (local.set $s3 (v128.const f64x2 0 0))
        (local.set $s4 (v128.const f64x2 0 0))
        (local.set $s5 (v128.const f64x2 0 0))
        (local.set $s6 (v128.const f64x2 0 0))
        (local.set $s7 (v128.const f64x2 0 0))
            (local.set $p (i32.add (local.get $x) (i32.shl (local.get $c) (i32.const 2))))
            (local.set $r (local.get $rows))
            (block $rows_done
              (loop $rows_loop
                (br_if $rows_done (i32.eqz (local.get $r)))
            (local.set $v (v128.load offset=0 (local.get $p)))
            (local.set $s0 (f64x2.add (local.get $s0) (f64x2.promote_low_f32x4 (local.get $v))))
            (local.set $s1 (f64x2.add (local.get $s1) (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v)))))
            (local.set $v (v128.load offset=16 (local.get $p)))
            (local.set $s2 (f64x2.add (local.get $s2) (f64x2.promote_low_f32x4 (local.get $v))))
            (local.set $s3 (f64x2.add (local.get $s3) (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v)))))
            (local.set $v (v128.load offset=32 (local.get $p)))
            (local.set $s4 (f64x2.add (local.get $s4) (f64x2.promote_low_f32x4 (local.get $v))))
            (local.set $s5 (f64x2.add (local.get $s5) (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v)))))
            (local.set $v (v128.load offset=48 (local.get $p)))
            (local.set $s6 (f64x2.add (local.get $s6) (f64x2.promote_low_f32x4 (local.get $v))))
            (local.set $s7 (f64x2.add (local.get $s7) (f64x2.promote_low_f32x4
              (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v)))))
                (local.set $p (i32.add (local.get $p) (local.get $stride)))
                (local.set $r (i32.sub (local.get $r) (i32.const 1)))
                (br $rows_loop)))
        (v128.store offset=0 (local.get $q) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
          (f32x4.demote_f64x2_zero (f64x2.mul (local.get $s0) (local.get $vscale))) (f32x4.demote_f64x2_zero (f64x2.mul (local.get $s1) (local.get $vscale)))))
        (v128.store offset=16 (local.get $q) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
          (f32x4.demote_f64x2_zero (f64x2.mul (local.get $s2) (local.get $vscale))) (f32x4.demote_f64x2_zero (f64x2.mul (local.get $s3) (local.get $vscale)))))
        (v128.store offset=32 (local.get $q) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
          (f32x4.demote_f64x2_zero (f64x2.mul (local.get $s4) (local.get $vscale))) (f32x4.demote_f64x2_zero (f64x2.mul (local.get $s5) (local.get $vscale)))))
        (v128.store offset=48 (local.get $q) (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
          (f32x4.demote_f64x2_zero (f64x2.mul (local.get $s6) (local.get $vscale))) (f32x4.demote_f64x2_zero (f64x2.mul (local.get $s7) (local.get $vscale))))))
          (else
            ;; fewer than 16 columns left: one column at a time
            (block $cols_done
              (loop $cols_loop
                (br_if $cols_done (i32.ge_u (local.get $c) (local.get $cols)))
                (local.set $acc (f64.const 0))
                (local.set $p (i32.add (local.get $x) (i32.shl (local.get $c) (i32.const 2))))
                (local.set $r (local.get $rows))
                (block $r_done
                  (loop $r_loop
                    (br_if $r_done (i32.eqz (local.get $r)))
                    (local.set $acc (f64.add (local.get $acc) (f64.promote_f32 (f32.load (local.get $p)))))
                    (local.set $p (i32.add (local.get $p) (local.get $stride)))
                    (local.set $r (i32.sub (local.get $r) (i32.const 1)))
                    (br $r_loop)))
                (f32.store (i32.add (local.get $y) (i32.shl (local.get $c) (i32.const 2)))
                  (f32.demote_f64 (f64.mul (local.get $acc) (local.get $scale))))
                (local.set $c (i32.add (local.get $c) (i32.const 1)))
                (br $cols_loop)))))
        (local.set $g (i32.add (local.get $g) (i32.const 1)))
        (br $groups))))

  ;; y = a + b for rows r0 <= row < r1 of a [rows, cols], b [cols] when $bcast is 1 (a bias added to every
  ;; row) or b [rows, cols] when 0 (the same shape; then the last row may end early, at n elements): one
  ;; float32 add per element, as TF.js's Add.
  (func (export "add_rows") (param $a i32) (param $b i32) (param $y i32) (param $r0 i32) (param $r1 i32)
    (param $cols i32) (param $n i32) (param $bcast i32)
    (local $o i32) (local $end i32) (local $vend i32) (local $bo i32) (local $row_bytes i32) (local $n_bytes i32)
    (local.set $row_bytes (i32.shl (local.get $cols) (i32.const 2)))
    (local.set $n_bytes (i32.shl (local.get $n) (i32.const 2)))
    (block $rows_done
      (loop $rows
        (br_if $rows_done (i32.ge_u (local.get $r0) (local.get $r1)))
        (local.set $o (i32.mul (local.get $r0) (local.get $row_bytes)))
        (local.set $end (i32.add (local.get $o) (local.get $row_bytes)))
        (if (i32.gt_u (local.get $end) (local.get $n_bytes)) (then (local.set $end (local.get $n_bytes))))
        (local.set $vend (i32.sub (local.get $end) (i32.const 12)))
        ;; b's element for a's byte o lies at bo + o: bo = b (same shape), or b less the row's start (bias)
        (local.set $bo (select (i32.sub (local.get $b) (local.get $o)) (local.get $b) (local.get $bcast)))
        (block $v_done
          (loop $v
            (br_if $v_done (i32.ge_s (local.get $o) (local.get $vend)))
            (v128.store (i32.add (local.get $y) (local.get $o)) (f32x4.add
              (v128.load (i32.add (local.get $a) (local.get $o)))
              (v128.load (i32.add (local.get $bo) (local.get $o)))))
            (local.set $o (i32.add (local.get $o) (i32.const 16)))
            (br $v)))
        (block $s_done
          (loop $sc
            (br_if $s_done (i32.ge_s (local.get $o) (local.get $end)))
            (f32.store (i32.add (local.get $y) (local.get $o)) (f32.add
              (f32.load (i32.add (local.get $a) (local.get $o)))
              (f32.load (i32.add (local.get $bo) (local.get $o)))))
            (local.set $o (i32.add (local.get $o) (i32.const 4)))
            (br $sc)))
        (local.set $r0 (i32.add (local.get $r0) (i32.const 1)))
        (br $rows))))

  ;; Runs of L 4-byte values, rows r0 <= r < r1: row r = (i0 n1 + i1) n2 + i2 copies L values from src at
  ;; i0 s0 + i1 s1 + i2 s2 to dst at i0 d0 + i1 d1 + i2 d2 (offsets in values). A transpose that keeps the
  ;; last axis, a concat or split along it, a slice: each is such a copy with up to three outer axes.
  (func (export "copy_runs") (param $src i32) (param $dst i32) (param $r0 i32) (param $r1 i32) (param $L i32)
    (param $n1 i32) (param $n2 i32) (param $s0 i32) (param $s1 i32) (param $s2 i32) (param $d0 i32)
    (param $d1 i32) (param $d2 i32)
    (local $i0 i32) (local $i1 i32) (local $i2 i32) (local $q i32) (local $bytes i32)
    (local.set $bytes (i32.shl (local.get $L) (i32.const 2)))
    (block $done
      (loop $rows
        (br_if $done (i32.ge_u (local.get $r0) (local.get $r1)))
        (local.set $i2 (i32.rem_u (local.get $r0) (local.get $n2)))
        (local.set $q (i32.div_u (local.get $r0) (local.get $n2)))
        (local.set $i1 (i32.rem_u (local.get $q) (local.get $n1)))
        (local.set $i0 (i32.div_u (local.get $q) (local.get $n1)))
        (memory.copy
          (i32.add (local.get $dst) (i32.shl (i32.add (i32.add
            (i32.mul (local.get $i0) (local.get $d0)) (i32.mul (local.get $i1) (local.get $d1)))
            (i32.mul (local.get $i2) (local.get $d2))) (i32.const 2)))
          (i32.add (local.get $src) (i32.shl (i32.add (i32.add
            (i32.mul (local.get $i0) (local.get $s0)) (i32.mul (local.get $i1) (local.get $s1)))
            (i32.mul (local.get $i2) (local.get $s2))) (i32.const 2)))
          (local.get $bytes))
        (local.set $r0 (i32.add (local.get $r0) (i32.const 1)))
        (br $rows))))

  ;; gather_rows: out[row, :] = table[idx[row], :] for rows r0 <= row < r1, rows of $rb bytes, idx int32
  ;; (the embedding lookup). One memory.copy per row, which streams the row where TF.js's GatherV2 moved
  ;; it value by value. The caller has checked every index against the table's rows.
  (func (export "gather_rows") (param $table i32) (param $idx i32) (param $out i32) (param $r0 i32)
    (param $r1 i32) (param $rb i32)
    (block $done
      (loop $rows
        (br_if $done (i32.ge_u (local.get $r0) (local.get $r1)))
        (memory.copy
          (i32.add (local.get $out) (i32.mul (local.get $r0) (local.get $rb)))
          (i32.add (local.get $table)
            (i32.mul (i32.load (i32.add (local.get $idx) (i32.shl (local.get $r0) (i32.const 2)))) (local.get $rb)))
          (local.get $rb))
        (local.set $r0 (i32.add (local.get $r0) (i32.const 1)))
        (br $rows))))
)
