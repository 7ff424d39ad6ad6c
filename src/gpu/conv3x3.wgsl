// A stride-1, zero-pad-1 3x3 convolution as an implicit GEMM, tiled in workgroup memory.
//
// out[o][p] = act(bias[o] + sum_k weight[o][k] * patch[k][p]) with k = i*9 + ky*3 + kx and
// patch[k][p] = in[i][y+ky-1][x+kx-1] (zero outside the image), p = y*w + x. The patches are
// never stored: each tile of them is gathered into workgroup memory as it is needed.
// The input gradient of such a conv is the same conv with flipped, transposed weights; its
// ReLU mask (the forward output > 0) is applied to the input as it is gathered.
//
// A workgroup computes a 64 x 64 tile of (channels x pixels), 16 x 16 threads each 4 channels x 4
// consecutive pixels of it (in vec4 registers),
// over slices of 16 of k.

struct Params {
    u0: vec4<u32>, // c_in, c_out, height, width
    u1: vec4<u32>, // flags (1 = ReLU after, 2 = mask the input by mask > 0, 4 = add the bias)
    f0: vec4<f32>,
    f1: vec4<f32>,
}

@group(0) @binding(0) var<storage, read> input: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

const TILE: u32 = 64u;
const SLICE: u32 = 16u;

var<workgroup> tile_w: array<vec4<f32>, 256>; // [SLICE][16]: weights of four channels, k-major
var<workgroup> tile_x: array<vec4<f32>, 256>; // [SLICE][16]: patches of four pixels, k-major

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let c_in = params.u0.x;
    let c_out = params.u0.y;
    let h = params.u0.z;
    let w = params.u0.w;
    let flags = params.u1.x;
    let pixels = h * w;
    let k_total = c_in * 9u;
    // Pixel tiles run along x and z (one dimension holds at most 65535), channel tiles along y.
    let pixel_tile = wid.x + wid.z * groups.x;
    if (pixel_tile * TILE >= pixels) {
        return;
    }
    let p0 = pixel_tile * TILE;
    let o0 = wid.y * TILE;
    let t = lid.y * 16u + lid.x;

    // What this thread gathers each slice: at k row `load_k`, four channels (weights) and four
    // pixels (patches) of group `load_g`.
    let load_k = t / 16u;
    let load_g = t % 16u;
    var py: vec4<i32>;
    var px: vec4<i32>;
    for (var j = 0u; j < 4u; j++) {
        let p = p0 + 4u * load_g + j;
        py[j] = i32(p / w);
        px[j] = i32(p % w);
    }

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < k_total; k0 += SLICE) {
        let k = k0 + load_k;
        var wv = vec4<f32>(0.0);
        var xv = vec4<f32>(0.0);
        if (k < k_total) {
            let ch = k / 9u;
            let r = k % 9u;
            let dy = i32(r / 3u) - 1;
            let dx = i32(r % 3u) - 1;
            for (var j = 0u; j < 4u; j++) {
                let o = o0 + 4u * load_g + j;
                if (o < c_out) {
                    wv[j] = weight[o * k_total + k];
                }
                let p = p0 + 4u * load_g + j;
                let y = py[j] + dy;
                let x = px[j] + dx;
                if (p < pixels && y >= 0 && y < i32(h) && x >= 0 && x < i32(w)) {
                    let at = ch * pixels + u32(y) * w + u32(x);
                    var v = input[at];
                    if ((flags & 2u) != 0u && mask[at] <= 0.0) {
                        v = 0.0;
                    }
                    xv[j] = v;
                }
            }
        }
        tile_w[load_k * 16u + load_g] = wv;
        tile_x[load_k * 16u + load_g] = xv;
        workgroupBarrier();
        for (var kk = 0u; kk < SLICE; kk++) {
            let a = tile_w[kk * 16u + lid.y];
            let b = tile_x[kk * 16u + lid.x];
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }
    let q0 = p0 + 4u * lid.x;
    for (var i = 0u; i < 4u; i++) {
        let o = o0 + 4u * lid.y + i;
        if (o >= c_out) {
            continue;
        }
        var row: vec4<f32>;
        switch i {
            case 0u: { row = acc0; }
            case 1u: { row = acc1; }
            case 2u: { row = acc2; }
            default: { row = acc3; }
        }
        if ((flags & 4u) != 0u) {
            row += vec4<f32>(bias[o]);
        }
        if ((flags & 1u) != 0u) {
            row = max(row, vec4<f32>(0.0));
        }
        for (var j = 0u; j < 4u; j++) {
            if (q0 + j < pixels) {
                out[o * pixels + q0 + j] = row[j];
            }
        }
    }
}
