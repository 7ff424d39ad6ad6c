//! A structural check of a JPEG's entropy-coded data, before it is decoded: every scan is
//! Huffman-decoded (without dequantising or transforming anything) to verify that every code is
//! valid, that no block has more than 64 coefficients, that restart markers come in order where
//! the restart interval puts them, and that each scan ends exactly at the next marker. A truncated
//! file, damaged bytes that desynchronise the Huffman stream ("extraneous bytes before marker",
//! as libjpeg warns) and a scan that runs into the next marker are all errors here, where
//! decoders fill the rest of the picture with grey.
//!
//! Baseline, extended and progressive Huffman JPEGs (SOF0, SOF1, SOF2) are checked, following
//! ITU-T T.81 (annexes F and G). Arithmetic-coded and lossless files are left to the decoder.

/// A canonical Huffman table (T.81 F.2.2.3): per code length, the largest code and where its
/// symbols start.
#[derive(Clone)]
struct Huffman {
    max_code: [i32; 17],
    offset: [i32; 17],
    symbols: Vec<u8>,
}

impl Huffman {
    fn new(counts: &[u8; 16], symbols: Vec<u8>) -> Result<Self, String> {
        let mut max_code = [-1i32; 17];
        let mut offset = [0i32; 17];
        let (mut code, mut k) = (0i32, 0i32);
        for len in 1..=16 {
            let n = counts[len - 1] as i32;
            offset[len] = k - code;
            code += n;
            k += n;
            max_code[len] = if n > 0 { code - 1 } else { -1 };
            if code > 1 << len {
                return Err("a Huffman table with too many codes".into());
            }
            code <<= 1;
        }
        Ok(Huffman { max_code, offset, symbols })
    }
}

/// Reads the bits of an entropy-coded segment: `FF 00` is a data byte `FF`, any other `FF xx`
/// is a marker, which ends the data.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u32,
    n: u32,
    /// A marker was reached (its position is `pos`).
    at_marker: bool,
}

impl<'a> Bits<'a> {
    fn bit(&mut self) -> Result<u32, String> {
        if self.n == 0 {
            if self.at_marker || self.pos >= self.data.len() {
                return Err("the scan ends before its last block (truncated or corrupt data)".into());
            }
            let b = self.data[self.pos];
            if b == 0xFF {
                match self.data.get(self.pos + 1) {
                    Some(0x00) => self.pos += 2,
                    Some(_) => {
                        self.at_marker = true;
                        return Err("the scan ends before its last block (truncated or corrupt data)".into());
                    }
                    None => return Err("the file ends inside a scan (truncated)".into()),
                }
            } else {
                self.pos += 1;
            }
            self.acc = b as u32;
            self.n = 8;
        }
        self.n -= 1;
        Ok((self.acc >> self.n) & 1)
    }

    fn bits(&mut self, count: u32) -> Result<u32, String> {
        let mut v = 0;
        for _ in 0..count {
            v = (v << 1) | self.bit()?;
        }
        Ok(v)
    }

    fn decode(&mut self, h: &Huffman) -> Result<u8, String> {
        let mut code = 0i32;
        for len in 1..=16 {
            code = (code << 1) | self.bit()? as i32;
            if code <= h.max_code[len] {
                let i = (code + h.offset[len]) as usize;
                return h.symbols.get(i).copied().ok_or_else(|| "a Huffman code past its table".into());
            }
        }
        Err("an invalid Huffman code (corrupt data)".into())
    }

    /// Drops the bits left in the current byte (they pad to a byte boundary before a marker).
    fn align(&mut self) {
        self.n = 0;
    }

    /// After the last block of a scan or restart interval: the bytes up to the next marker. Fill
    /// bytes `FF` before a marker are allowed; anything else is data the decoder did not use.
    fn leftover(&self) -> usize {
        let mut p = self.pos;
        let mut extra = 0;
        while p < self.data.len() {
            match (self.data[p], self.data.get(p + 1)) {
                (0xFF, Some(0xFF)) => p += 1,
                (0xFF, Some(0x00)) => {
                    extra += 1;
                    p += 2
                }
                (0xFF, _) => return extra,
                _ => {
                    extra += 1;
                    p += 1
                }
            }
        }
        extra
    }
}

struct Component {
    id: u8,
    h: usize,
    v: usize,
    /// Blocks across and down in the component's own (non-interleaved) grid.
    blocks_w: usize,
    blocks_h: usize,
    /// Progressive: which coefficients of each block are nonzero so far (bit k).
    nonzero: Vec<u64>,
    /// Which coefficients scans have brought to full precision (bit k).
    complete: u64,
}

struct Frame {
    progressive: bool,
    width: usize,
    height: usize,
    components: Vec<Component>,
    h_max: usize,
    v_max: usize,
}

fn be16(d: &[u8], at: usize) -> Result<usize, String> {
    d.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| "the file ends inside a header".into())
}

/// Checks the whole file; `Ok` also for the kinds of JPEG this check does not cover.
pub fn check(d: &[u8]) -> Result<(), String> {
    if !d.starts_with(&[0xFF, 0xD8]) {
        return Err("not a JPEG file".into());
    }
    let mut pos = 2;
    let mut dc: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac: [Option<Huffman>; 4] = [None, None, None, None];
    let mut restart = 0usize;
    let mut frame: Option<Frame> = None;
    let mut scans = 0;
    // Every coefficient of every component must arrive at full precision: a file cut between
    // the scans of a progressive JPEG is as truncated as one cut inside a scan.
    let complete = |frame: &Option<Frame>, scans: usize| match frame {
        Some(f) if scans > 0 => {
            if f.components.iter().all(|c| c.complete == u64::MAX) {
                Ok(())
            } else {
                Err("the image data stops before the last scan (truncated)".to_string())
            }
        }
        _ => Err("the file has no image data".to_string()),
    };
    loop {
        // The next marker (fill bytes FF may precede it).
        while d.get(pos) == Some(&0xFF) && d.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        match (d.get(pos), d.get(pos + 1)) {
            (Some(0xFF), Some(&m)) if m != 0 => pos += 2,
            // No end-of-image marker: fine if every scan is there (some writers omit it).
            (None, _) | (Some(_), None) => return complete(&frame, scans),
            _ => return Err(format!("a marker was expected at byte {pos} (corrupt data)")),
        }
        let marker = d[pos - 1];
        match marker {
            0xD9 => return complete(&frame, scans),
            0xD0..=0xD7 | 0x01 => continue,
            _ => {}
        }
        let len = be16(d, pos)?;
        if len < 2 || pos + len > d.len() {
            return Err("a header runs past the end of the file (truncated)".into());
        }
        let seg = &d[pos + 2..pos + len];
        pos += len;
        match marker {
            0xC4 => {
                // DHT: one or more tables.
                let mut s = seg;
                while !s.is_empty() {
                    if s.len() < 17 {
                        return Err("a short Huffman table".into());
                    }
                    let (class, id) = (s[0] >> 4, (s[0] & 15) as usize);
                    let counts: [u8; 16] = s[1..17].try_into().unwrap();
                    let total: usize = counts.iter().map(|&c| c as usize).sum();
                    if id > 3 || class > 1 || s.len() < 17 + total {
                        return Err("a malformed Huffman table".into());
                    }
                    let table = Huffman::new(&counts, s[17..17 + total].to_vec())?;
                    if class == 0 {
                        dc[id] = Some(table)
                    } else {
                        ac[id] = Some(table)
                    }
                    s = &s[17 + total..];
                }
            }
            0xDD => restart = be16(seg, 0)?,
            0xC0 | 0xC1 | 0xC2 => {
                if seg.len() < 6 {
                    return Err("a short frame header".into());
                }
                let (height, width, n) = (be16(seg, 1)?, be16(seg, 3)?, seg[5] as usize);
                if seg.len() < 6 + 3 * n || n == 0 || height == 0 || width == 0 {
                    return Err("a malformed frame header".into());
                }
                let mut components = Vec::new();
                for c in 0..n {
                    let (id, hv) = (seg[6 + 3 * c], seg[7 + 3 * c]);
                    let (h, v) = ((hv >> 4) as usize, (hv & 15) as usize);
                    if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
                        return Err("a malformed frame header (sampling factors)".into());
                    }
                    components.push(Component { id, h, v, blocks_w: 0, blocks_h: 0, nonzero: Vec::new(), complete: 0 });
                }
                let h_max = components.iter().map(|c| c.h).max().unwrap();
                let v_max = components.iter().map(|c| c.v).max().unwrap();
                let progressive = marker == 0xC2;
                for c in &mut components {
                    c.blocks_w = (width * c.h).div_ceil(h_max).div_ceil(8);
                    c.blocks_h = (height * c.v).div_ceil(v_max).div_ceil(8);
                    if progressive {
                        c.nonzero = vec![0; c.blocks_w * c.blocks_h];
                    }
                }
                frame = Some(Frame { progressive, width, height, components, h_max, v_max });
            }
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                // Lossless, hierarchical or arithmetic-coded: not checked here.
                return Ok(());
            }
            0xDA => {
                let f = frame.as_mut().ok_or("a scan before the frame header")?;
                let used = scan(f, seg, &d[pos..], &dc, &ac, restart)?;
                pos += used;
                scans += 1;
            }
            _ => {}
        }
    }
}

/// Checks one scan whose header is `seg` and whose data starts `data`; returns the bytes of
/// data used (up to the marker that follows).
fn scan(
    f: &mut Frame,
    seg: &[u8],
    data: &[u8],
    dc: &[Option<Huffman>; 4],
    ac: &[Option<Huffman>; 4],
    restart: usize,
) -> Result<usize, String> {
    let n = *seg.first().ok_or("a short scan header")? as usize;
    if n == 0 || n > 4 || seg.len() < 1 + 2 * n + 3 {
        return Err("a malformed scan header".into());
    }
    let mut comps = Vec::new();
    for k in 0..n {
        let (id, t) = (seg[1 + 2 * k], seg[2 + 2 * k]);
        let c = f.components.iter().position(|c| c.id == id).ok_or("a scan names a component the frame has not")?;
        comps.push((c, (t >> 4) as usize & 3, (t & 15) as usize & 3));
    }
    let (ss, se, ah, al) = (seg[1 + 2 * n] as usize, seg[2 + 2 * n] as usize, seg[3 + 2 * n] >> 4, seg[3 + 2 * n] & 15);
    if se > 63 || ss > se || (!f.progressive && (ss != 0 || se != 63)) || (ss > 0 && n != 1) || al > 13 {
        return Err("a malformed scan header (spectral selection)".into());
    }
    let table =
        |t: &[Option<Huffman>; 4], i: usize| t[i].clone().ok_or("a scan uses a Huffman table that is not defined");
    let dc_tables: Vec<Option<Huffman>> = comps
        .iter()
        .map(|&(_, d, _)| if ss == 0 && ah == 0 { table(dc, d).map(Some) } else { Ok(None) })
        .collect::<Result<_, _>>()?;
    let ac_tables: Vec<Option<Huffman>> = comps
        .iter()
        .map(|&(_, _, a)| if se > 0 { table(ac, a).map(Some) } else { Ok(None) })
        .collect::<Result<_, _>>()?;
    let mut bits = Bits { data, pos: 0, acc: 0, n: 0, at_marker: false };
    // The MCUs, and the blocks each covers.
    let (mcu_w, mcu_h) = if n == 1 {
        let c = &f.components[comps[0].0];
        (c.blocks_w, c.blocks_h)
    } else {
        (f.width.div_ceil(8 * f.h_max), f.height.div_ceil(8 * f.v_max))
    };
    let mcus = mcu_w * mcu_h;
    let mut eobrun = 0u32;
    let mut rst = 0u8;
    for m in 0..mcus {
        if restart > 0 && m > 0 && m % restart == 0 {
            bits.align();
            if bits.leftover() > 0 {
                return Err("extraneous bytes before a restart marker (corrupt data)".into());
            }
            // Skip fill bytes, then RSTn in sequence.
            let mut p = bits.pos;
            while data.get(p) == Some(&0xFF) && data.get(p + 1) == Some(&0xFF) {
                p += 1;
            }
            if data.get(p) != Some(&0xFF) || data.get(p + 1) != Some(&(0xD0 + rst)) {
                return Err("a restart marker is missing or out of order (corrupt data)".into());
            }
            rst = (rst + 1) % 8;
            bits = Bits { data, pos: p + 2, acc: 0, n: 0, at_marker: false };
            eobrun = 0;
        }
        let (mx, my) = (m % mcu_w, m / mcu_w);
        for (k, &(ci, _, _)) in comps.iter().enumerate() {
            let c = &mut f.components[ci];
            let (bw, bh) = if n == 1 { (1, 1) } else { (c.h, c.v) };
            for by in 0..bh {
                for bx in 0..bw {
                    let (x, y) = if n == 1 { (mx, my) } else { (mx * c.h + bx, my * c.v + by) };
                    // Blocks of an interleaved MCU past the image's edge are coded but not kept.
                    let idx = (x < c.blocks_w && y < c.blocks_h).then(|| y * c.blocks_w + x);
                    block(&mut bits, &dc_tables[k], &ac_tables[k], (ss, se, ah), c, idx, &mut eobrun)?;
                }
            }
        }
    }
    if al == 0 {
        let band = if se == 63 { u64::MAX << ss } else { ((1u64 << (se + 1)) - 1) & (u64::MAX << ss) };
        comps.iter().for_each(|&(ci, _, _)| f.components[ci].complete |= band);
    }
    bits.align();
    let extra = bits.leftover();
    if extra > 0 {
        return Err(format!("{extra} extraneous bytes after the last block of a scan (corrupt data)"));
    }
    let mut p = bits.pos;
    while p < data.len() && !(data[p] == 0xFF && data.get(p + 1).is_some_and(|&b| b != 0 && b != 0xFF)) {
        p += 1;
    }
    Ok(p)
}

/// One block of a scan: `(ss, se, ah)` its spectral band and successive approximation.
fn block(
    bits: &mut Bits<'_>,
    dc: &Option<Huffman>,
    ac: &Option<Huffman>,
    (ss, se, ah): (usize, usize, u8),
    c: &mut Component,
    idx: Option<usize>,
    eobrun: &mut u32,
) -> Result<(), String> {
    let corrupt = |what: &str| Err(format!("{what} (corrupt data)"));
    if ss == 0 {
        if ah == 0 {
            let s = bits.decode(dc.as_ref().expect("a DC table"))? as u32;
            if s > 15 {
                return corrupt("a DC coefficient out of range");
            }
            bits.bits(s)?;
        } else {
            bits.bit()?; // a DC refinement bit
        }
        if se == 0 {
            return Ok(());
        }
    }
    let ac = ac.as_ref().expect("an AC table");
    let first = ss.max(1);
    let mut nz = idx.map_or(0, |i| c.nonzero.get(i).copied().unwrap_or(0));
    let progressive = !c.nonzero.is_empty();
    if !progressive {
        // Sequential: run-length coded coefficients 1..63.
        let mut k = 1;
        while k <= 63 {
            let rs = bits.decode(ac)?;
            let (r, s) = ((rs >> 4) as usize, (rs & 15) as u32);
            if s == 0 {
                if r != 15 {
                    break;
                }
                k += 16;
            } else {
                k += r;
                bits.bits(s)?;
                k += 1;
            }
        }
        if k > 64 {
            return corrupt("a block with more than 64 coefficients");
        }
        return Ok(());
    }
    if ah == 0 {
        // Progressive, first pass over the band.
        if *eobrun > 0 {
            *eobrun -= 1;
            return Ok(());
        }
        let mut k = first;
        while k <= se {
            let rs = bits.decode(ac)?;
            let (r, s) = ((rs >> 4) as u32, (rs & 15) as u32);
            if s == 0 {
                if r < 15 {
                    *eobrun = (1 << r) + bits.bits(r)? - 1;
                    break;
                }
                k += 16;
            } else {
                k += r as usize;
                if k > se {
                    return corrupt("a coefficient past the scan's band");
                }
                bits.bits(s)?;
                nz |= 1 << k;
                k += 1;
            }
        }
    } else {
        // Progressive refinement: a correction bit for each coefficient already nonzero, and
        // new coefficients of magnitude one.
        let mut k = first;
        if *eobrun == 0 {
            while k <= se {
                let rs = bits.decode(ac)?;
                let (mut r, s) = ((rs >> 4) as u32, (rs & 15) as u32);
                if s != 0 {
                    if s != 1 {
                        return corrupt("a refinement coefficient larger than one");
                    }
                    bits.bit()?;
                } else if r != 15 {
                    *eobrun = 1 << r;
                    if r > 0 {
                        *eobrun += bits.bits(r)?;
                    }
                    break;
                }
                while k <= se {
                    if nz & (1 << k) != 0 {
                        bits.bit()?;
                    } else if r == 0 {
                        break;
                    } else {
                        r -= 1;
                    }
                    k += 1;
                }
                if s != 0 {
                    if k > se {
                        return corrupt("a coefficient past the scan's band");
                    }
                    nz |= 1 << k;
                }
                k += 1;
            }
        }
        if *eobrun > 0 {
            while k <= se {
                if nz & (1 << k) != 0 {
                    bits.bit()?;
                }
                k += 1;
            }
            *eobrun -= 1;
        }
    }
    if let Some(i) = idx
        && let Some(slot) = c.nonzero.get_mut(i)
    {
        *slot = nz;
    }
    Ok(())
}
