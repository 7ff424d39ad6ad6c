// The small kernels of an evaluation: preprocessing, pooling, masks, the loss gradients that are
// element by element, the total variation, and partial sums for the losses.
//
// Every entry point shares one layout: x and y are read, out and out2 written. A thread handles
// one element; workgroups of 256 run along x and y (one dimension holds at most 65535).

struct Params {
    u0: vec4<u32>,
    u1: vec4<u32>,
    f0: vec4<f32>,
    f1: vec4<f32>,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read_write> out2: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

fn index(wid: vec3<u32>, groups: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * 256u + lid.x;
}

// Network input from planar RGB 0..255: channel c = f0[c] * pixel[u1[c]] + f1[c].
// u0.x = pixels per plane.
@compute @workgroup_size(256)
fn preprocess(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    let n = params.u0.x;
    if (i >= 3u * n) {
        return;
    }
    let c = i / n;
    out[i] = params.f0[c] * x[params.u1[c] * n + i % n] + params.f1[c];
}

// The chain rule back through `preprocess`: pixel plane u1[c] gets f0[c] times channel c.
@compute @workgroup_size(256)
fn preprocess_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    let n = params.u0.x;
    if (i >= 3u * n) {
        return;
    }
    let c = i / n;
    out[params.u1[c] * n + i % n] = params.f0[c] * x[i];
}

// The largest of a 2x2 window starting at `at` in rows of `w`, and its position 0 1 / 2 3 (the
// first one on ties, as the CPU path).
fn window_max(at: u32, w: u32) -> vec2<f32> {
    let t0 = x[at];
    let t1 = x[at + 1u];
    let b0 = x[at + w];
    let b1 = x[at + w + 1u];
    var m01 = t0;
    var i01 = 0.0;
    if (t1 > t0) {
        m01 = t1;
        i01 = 1.0;
    }
    var m23 = b0;
    var i23 = 2.0;
    if (b1 > b0) {
        m23 = b1;
        i23 = 3.0;
    }
    if (m23 > m01) {
        return vec2<f32>(m23, i23);
    }
    return vec2<f32>(m01, i01);
}

// 2x2 stride-2 pooling of u0 = (channels, height, width, 0 max | 1 average); odd rows and
// columns dropped. One thread per output.
@compute @workgroup_size(256)
fn pool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    let h = params.u0.y;
    let w = params.u0.z;
    let oh = h / 2u;
    let ow = w / 2u;
    if (i >= params.u0.x * oh * ow) {
        return;
    }
    let c = i / (oh * ow);
    let r = i % (oh * ow);
    let at = c * h * w + 2u * (r / ow) * w + 2u * (r % ow);
    if (params.u0.w == 0u) {
        out[i] = window_max(at, w).x;
    } else {
        out[i] = 0.25 * (x[at] + x[at + 1u] + x[at + w] + x[at + w + 1u]);
    }
}

// The gradient through `pool_forward`: x is the pooling's input, y the gradient of its output;
// to the maximum (found again from x) or spread evenly. One thread per input.
@compute @workgroup_size(256)
fn pool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    let h = params.u0.y;
    let w = params.u0.z;
    if (i >= params.u0.x * h * w) {
        return;
    }
    let oh = h / 2u;
    let ow = w / 2u;
    let c = i / (h * w);
    let r = i % (h * w);
    let yy = r / w;
    let xx = r % w;
    var v = 0.0;
    if (yy / 2u < oh && xx / 2u < ow) {
        let g = y[c * oh * ow + (yy / 2u) * ow + xx / 2u];
        if (params.u0.w == 0u) {
            let at = c * h * w + (yy & ~1u) * w + (xx & ~1u);
            let k = f32((yy % 2u) * 2u + xx % 2u);
            if (window_max(at, w).y == k) {
                v = g;
            }
        } else {
            v = 0.25 * g;
        }
    }
    out[i] = v;
}

// out = max(x, 0). u0.x = elements.
@compute @workgroup_size(256)
fn relu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    if (i >= params.u0.x) {
        return;
    }
    out[i] = max(x[i], 0.0);
}

// out = out where y > 0, else 0 (the ReLU's gradient mask). u0.x = elements.
@compute @workgroup_size(256)
fn relu_mask(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    if (i >= params.u0.x) {
        return;
    }
    if (y[i] <= 0.0) {
        out[i] = 0.0;
    }
}

// out (+)= x times the mask y, one mask value per position of each plane.
// u0 = (elements, plane, 1 = add).
@compute @workgroup_size(256)
fn mask_planes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    if (i >= params.u0.x) {
        return;
    }
    var v = x[i] * y[i % params.u0.y];
    if (params.u0.z == 1u) {
        v += out[i];
    }
    out[i] = v;
}

// The content loss's gradient: out (+)= f0.x * (x - y). u0 = (elements, 1 = add).
@compute @workgroup_size(256)
fn content_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    if (i >= params.u0.x) {
        return;
    }
    var v = params.f0.x * (x[i] - y[i]);
    if (params.u0.y == 1u) {
        v += out[i];
    }
    out[i] = v;
}

// out = f0.x * the sum of the u0.y slices of x, u0.x values each (the split products' total).
@compute @workgroup_size(256)
fn sum_splits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    let n = params.u0.x;
    if (i >= n) {
        return;
    }
    var s = 0.0;
    for (var k = 0u; k < params.u0.y; k++) {
        s += x[k * n + i];
    }
    out[i] = params.f0.x * s;
}

// The total variation of planar RGB pixels x (u0 = (height, width)): adds its gradient to out,
// kx = f0.x and ky = f0.y times the differences, and writes each pixel's share of the loss to
// out2 (f0.z = weight / horizontal pairs, f0.w = weight / vertical pairs).
@compute @workgroup_size(256)
fn total_variation(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    let h = params.u0.x;
    let w = params.u0.y;
    if (i >= 3u * h * w) {
        return;
    }
    let r = i % (h * w);
    let yy = r / w;
    let xx = r % w;
    let v = x[i];
    var g = 0.0;
    var e = 0.0;
    if (xx + 1u < w) {
        let d = x[i + 1u] - v;
        g -= params.f0.x * d;
        e += params.f0.z * d * d;
    }
    if (xx > 0u) {
        g += params.f0.x * (v - x[i - 1u]);
    }
    if (yy + 1u < h) {
        let d = x[i + w] - v;
        g -= params.f0.y * d;
        e += params.f0.w * d * d;
    }
    if (yy > 0u) {
        g += params.f0.y * (v - x[i - w]);
    }
    out[i] += g;
    out2[i] = e;
}

var<workgroup> partial: array<f32, 256>;

// Partial sums of x (u0.y = 0), of (x - y)^2 (u0.y = 1) or of |x| (u0.y = 2) over u0.x elements:
// workgroup k sums elements [4096 k, 4096 (k + 1)) into out2[u0.z + k].
@compute @workgroup_size(256)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let group = wid.y * groups.x + wid.x;
    let n = params.u0.x;
    var s = 0.0;
    for (var j = 0u; j < 16u; j++) {
        let i = group * 4096u + j * 256u + lid.x;
        if (i < n) {
            if (params.u0.y == 1u) {
                let d = x[i] - y[i];
                s += d * d;
            } else if (params.u0.y == 2u) {
                s += abs(x[i]);
            } else {
                s += x[i];
            }
        }
    }
    partial[lid.x] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride /= 2u) {
        if (lid.x < stride) {
            partial[lid.x] += partial[lid.x + stride];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        out2[params.u0.z + group] = partial[0];
    }
}

// Where the window's value i (of `crop` and `embed_add`) lies in the whole layer.
fn in_layer(i: u32) -> u32 {
    let plane = params.u0.y * params.u0.z;
    let c = i / plane;
    let r = i % plane;
    return c * params.u1.y * params.u1.z + (r / params.u0.z + params.u0.w) * params.u1.y + r % params.u0.z + params.u1.x;
}

// A window of planes: out[c][j][i] = x[c][j + u0.w][i + u1.x] for the window's u0.y x u0.z
// positions (height, width) of u0.x planes of u1.y columns (the whole layer's width) and u1.z
// rows.
@compute @workgroup_size(256)
fn crop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    if (i >= params.u0.x * params.u0.y * params.u0.z) {
        return;
    }
    out[i] = x[in_layer(i)];
}

// The inverse of `crop`, added and scaled: out[c][j + u0.w][i + u1.x] += f0.x * x[c][j][i], the
// same parameters.
@compute @workgroup_size(256)
fn embed_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    if (i >= params.u0.x * params.u0.y * params.u0.z) {
        return;
    }
    out[in_layer(i)] += params.f0.x * x[i];
}

// Rows shifted: out[i] = f0.x * v + f0.y * y[i / u0.y] over u0.x elements (rows of u0.y), v being
// out[i] itself when u0.z = 1 (in place) and x[i] otherwise: a mean subtracted, a shift added.
@compute @workgroup_size(256)
fn row_affine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    if (i >= params.u0.x) {
        return;
    }
    var v = 0.0;
    if (params.u0.z == 1u) {
        v = out[i];
    } else {
        v = x[i];
    }
    out[i] = params.f0.x * v + params.f0.y * y[i / params.u0.y];
}

// out (+)= f0.x * x over u0.x elements (u0.y = 1: added).
@compute @workgroup_size(256)
fn axpy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    if (i >= params.u0.x) {
        return;
    }
    var v = params.f0.x * x[i];
    if (params.u0.y == 1u) {
        v += out[i];
    }
    out[i] = v;
}

// out = f0.x over u0.x elements.
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wid, groups, lid);
    if (i >= params.u0.x) {
        return;
    }
    out[i] = params.f0.x;
}
