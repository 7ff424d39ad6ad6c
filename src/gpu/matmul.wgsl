// A matrix product tiled in workgroup memory: out[m][n] (+)= alpha * sum_k a[m][k] * b(k, n),
// a row-major M x K, b either K x N (b(k, n) = b[k*N + n]) or N x K (b(k, n) = b[n*K + k], as in
// a Gram matrix F F^T). With splits > 1 the k range is cut into that many slices, slice z
// writing its partial product at out[z*M*N..]: the Gram matrices of large images sum millions
// of positions, and the slices keep every compute unit busy.
//
// A workgroup computes a 64 x 64 tile, 16 x 16 threads each 4 x 4 of it, over slices of 16 of k.

struct Params {
    u0: vec4<u32>, // M, N, K, flags (1 = b is N x K, 2 = add to out)
    u1: vec4<u32>, // k per split, splits
    f0: vec4<f32>, // alpha
    f1: vec4<f32>,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const TILE: u32 = 64u;
const SLICE: u32 = 16u;

var<workgroup> tile_a: array<f32, 1024>; // [SLICE][TILE]
var<workgroup> tile_b: array<f32, 1024>; // [SLICE][TILE]

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let m_total = params.u0.x;
    let n_total = params.u0.y;
    let k_total = params.u0.z;
    let flags = params.u0.w;
    let k_per = params.u1.x;
    let splits = params.u1.y;
    var n_tile = wid.x;
    var split = 0u;
    if (splits > 1u) {
        split = wid.z;
    } else {
        n_tile = wid.x + wid.z * groups.x;
    }
    if (n_tile * TILE >= n_total) {
        return;
    }
    let n0 = n_tile * TILE;
    let m0 = wid.y * TILE;
    let k_begin = split * k_per;
    let k_end = min(k_begin + k_per, k_total);
    let t = lid.y * 16u + lid.x;
    let nk = (flags & 1u) != 0u;

    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }
    for (var k0 = k_begin; k0 < k_end; k0 += SLICE) {
        // a: one k column for four rows per thread.
        for (var i = 0u; i < 4u; i++) {
            let kk = t % SLICE;
            let r = t / SLICE + 16u * i;
            let m = m0 + r;
            let k = k0 + kk;
            var v = 0.0;
            if (m < m_total && k < k_end) {
                v = a[m * k_total + k];
            }
            tile_a[kk * TILE + r] = v;
        }
        // b: consecutive threads read consecutive memory in either layout.
        for (var i = 0u; i < 4u; i++) {
            var kk: u32;
            var c: u32;
            if (nk) {
                kk = t % SLICE;
                c = t / SLICE + 16u * i;
            } else {
                kk = t / TILE + 4u * i;
                c = t % TILE;
            }
            let n = n0 + c;
            let k = k0 + kk;
            var v = 0.0;
            if (n < n_total && k < k_end) {
                if (nk) {
                    v = b[n * k_total + k];
                } else {
                    v = b[k * n_total + n];
                }
            }
            tile_b[kk * TILE + c] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < SLICE; kk++) {
            var va: array<f32, 4>;
            var vb: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                va[i] = tile_a[kk * TILE + lid.y + 16u * i];
                vb[i] = tile_b[kk * TILE + lid.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(va[i], vb[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    let alpha = params.f0.x;
    let base = split * m_total * n_total;
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + lid.y + 16u * i;
        if (m >= m_total) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x + 16u * j;
            if (n < n_total) {
                let at = base + m * n_total + n;
                var v = alpha * acc[i][j];
                if ((flags & 2u) != 0u) {
                    v += out[at];
                }
                out[at] = v;
            }
        }
    }
}
