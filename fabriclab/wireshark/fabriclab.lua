-- fabriclab.lua: Wireshark / tshark dissector for fabriclab's own headers.
--
-- What it dissects (the layouts of fabriclab/wire/roce.py; field names follow the scapy
-- layers of fabriclab/wire/layers.py):
--
--   * RoCEv2 frames on UDP 4791.  Wireshark's own InfiniBand dissector keeps dissecting the
--     BTH (a data frame is "RC Send Only", an ACK "RC Acknowledge"); this script does not
--     replace it.  A postdissector reads the UDP payload again and, when the BTH flags one
--     of fabriclab's extensions in reserved bits of BTH byte 8 (INT 0x01, GSE 0x02,
--     SACK 0x04, next to AckReq 0x80), adds a "fabriclab RoCEv2 extensions" tree with
--       - "fabriclab INT": HPCC's in-band telemetry area, u8 hops | u8 max_hops |
--         u16 reserved | max_hops x 20-byte record (u64 ts_ns | u32 tx_bytes |
--         u32 qlen_bytes | u32 rate_kbps), big-endian; right after the BTH of a data frame
--         (RC SEND_ONLY), after the AETH (and the SACK) of the ACK that echoes it;
--       - "fabriclab GSE container tag": u16 src_gsp | u16 dst_port | u32 seq | u16 index |
--         u8 flags (0x01 last) | u8 path, after the BTH of a data frame, or after its INT
--         area when both are flagged;
--       - "fabriclab SACK": u8 reserved | u24 psn, right after the AETH of an ACK or NACK.
--     Frames with none of those flags (and every other opcode) get nothing from this script.
--   * GSE control datagrams on UDP 4792 (GSP <-> GSOS) and 4793 (agent <-> agent):
--       REQUEST: u8 type=1 | u8 n | u16 src_gsp | u16 dst_port | u16 reserved | n x u32 size
--       GRANT:   u8 type=2 | u8 path (0xff: none) | u16 src_gsp | u16 dst_port
--                | u16 flags (0x0001 idle) | u32 nbytes
--
-- Display-filter fields (all under "fabriclab."):
--   fabriclab                      the extensions tree of a RoCEv2 frame
--   fabriclab.flags{,.int,.gse,.sack}   the extension flags of BTH byte 8
--   fabriclab.int, .int.hops, .int.max_hops, .int.reserved, .int.record, .int.ts_ns,
--     .int.tx_bytes, .int.qlen_bytes, .int.rate_kbps, .int.unused
--   fabriclab.gse.tag, .gse.tag.src_gsp, .gse.tag.dst_port, .gse.tag.seq, .gse.tag.index,
--     .gse.tag.flags, .gse.tag.flags.last, .gse.tag.path
--   fabriclab.sack, .sack.reserved, .sack.psn
--   fabriclab.gse (a REQUEST or GRANT datagram; a tagged data frame is fabriclab.gse.tag),
--     fabriclab.gse.type,
--     fabriclab.gse.request, .gse.request.n, .gse.request.src_gsp, .gse.request.dst_port,
--     .gse.request.reserved, .gse.request.size (one per size asked)
--     fabriclab.gse.grant, .gse.grant.path, .gse.grant.src_gsp, .gse.grant.dst_port,
--     .gse.grant.flags, .gse.grant.flags.idle, .gse.grant.nbytes
-- e.g.  tshark ... -Y 'fabriclab.int.hops >= 2' -T fields -e fabriclab.int.qlen_bytes
-- (a boolean field's bare name tests that it is present: write fabriclab.flags.sack == 1)
--
-- Use it with tshark (the script is installed with the fabriclab package):
--   tshark -X lua_script:$(python -c 'import fabriclab, os; print(os.path.dirname(fabriclab.__file__))')/wireshark/fabriclab.lua -r FILE -V
-- (from Python: fabriclab.wireshark.tshark_args() gives the "-X lua_script:..." pair).
-- With Wireshark: copy it into ~/.local/lib/wireshark/plugins/ (the personal Lua plugins
-- folder; Help > About Wireshark > Folders shows it) and restart Wireshark, or reload Lua
-- plugins (Analyze > Reload Lua Plugins, Ctrl+Shift+L).
--
-- The emulator's captures are cut at 160 bytes and their RoCE frames restored when saved
-- (fabriclab/emu/pcap.py); in a capture still cut, what is missing is flagged with an
-- expert note instead of dissected.
--
-- Written for Wireshark 4.0 (Lua 5.2); uses no bit library, so it loads on later Lua too.

local ROCE_PORT = 4791
local GSE_PORT = 4792 -- GRANTs to GSPs, REQUESTs to GSOS
local GSE_EGRESS_PORT = 4793 -- REQUESTs to a destination agent, and its GRANTs back

local OP_SEND_ONLY = 0x04
local OP_ACK = 0x11
local INT_FLAG, GSE_FLAG, SACK_FLAG = 0x01, 0x02, 0x04
local BTH_LEN, AETH_LEN, SACK_LEN, ICRC_LEN = 12, 4, 4, 4
local INT_HEADER_LEN, INT_RECORD_LEN = 4, 20
local GSE_TAG_LEN = 12
local GSE_CONTROL_LEN = 8
local GSE_REQUEST, GSE_GRANT, NO_PATH = 1, 2, 0xff

local function has_bit(value, mask) -- one-bit masks only; no bit library needed
    return math.floor(value / mask) % 2 == 1
end

------------------------------------------------------------------------------------------
-- RoCEv2 extensions (a postdissector over UDP 4791)
------------------------------------------------------------------------------------------

local ext = Proto("fabriclab", "fabriclab RoCEv2 extensions")

local pf = {
    flags = ProtoField.uint8("fabriclab.flags", "Extension flags (BTH byte 8)", base.HEX, nil,
        0x07, "fabriclab's extension flags, reserved bits of BTH byte 8"),
    flag_int = ProtoField.bool("fabriclab.flags.int", "INT area", 8, nil, INT_FLAG),
    flag_gse = ProtoField.bool("fabriclab.flags.gse", "GSE container tag", 8, nil, GSE_FLAG),
    flag_sack = ProtoField.bool("fabriclab.flags.sack", "SACK", 8, nil, SACK_FLAG),

    int = ProtoField.none("fabriclab.int", "fabriclab INT", "HPCC in-band telemetry area"),
    int_hops = ProtoField.uint8("fabriclab.int.hops", "Hops", base.DEC, nil, nil,
        "INT records written so far"),
    int_max_hops = ProtoField.uint8("fabriclab.int.max_hops", "Max hops", base.DEC, nil, nil,
        "Room for records"),
    int_reserved = ProtoField.uint16("fabriclab.int.reserved", "Reserved", base.HEX),
    int_record = ProtoField.none("fabriclab.int.record", "INT record",
        "One switch egress port's record"),
    int_ts_ns = ProtoField.uint64("fabriclab.int.ts_ns", "Timestamp (ns)", base.DEC, nil, nil,
        "When the frame entered the port (the switch's CLOCK_MONOTONIC)"),
    int_tx_bytes = ProtoField.uint32("fabriclab.int.tx_bytes", "TX bytes", base.DEC, nil, nil,
        "The port's transmitted-byte counter, mod 2^32"),
    int_qlen_bytes = ProtoField.uint32("fabriclab.int.qlen_bytes", "Queue length (bytes)",
        base.DEC),
    int_rate_kbps = ProtoField.uint32("fabriclab.int.rate_kbps", "Rate (kbit/s)", base.DEC),
    int_unused = ProtoField.bytes("fabriclab.int.unused", "Unused room"),

    tag = ProtoField.none("fabriclab.gse.tag", "fabriclab GSE container tag",
        "The GSE packet container this data frame belongs to"),
    tag_src_gsp = ProtoField.uint16("fabriclab.gse.tag.src_gsp", "Source GSP", base.DEC),
    tag_dst_port = ProtoField.uint16("fabriclab.gse.tag.dst_port", "Destination port",
        base.DEC),
    tag_seq = ProtoField.uint32("fabriclab.gse.tag.seq", "Container sequence number",
        base.DEC),
    tag_index = ProtoField.uint16("fabriclab.gse.tag.index", "Index in container", base.DEC),
    tag_flags = ProtoField.uint8("fabriclab.gse.tag.flags", "Flags", base.HEX),
    tag_last = ProtoField.bool("fabriclab.gse.tag.flags.last", "Last packet of the container",
        8, nil, 0x01),
    tag_path = ProtoField.uint8("fabriclab.gse.tag.path", "Path", base.DEC),

    sack = ProtoField.none("fabriclab.sack", "fabriclab SACK",
        "Selective repeat: the out-of-order packet this ACK/NACK answers"),
    sack_reserved = ProtoField.uint8("fabriclab.sack.reserved", "Reserved", base.HEX),
    sack_psn = ProtoField.uint24("fabriclab.sack.psn", "SACK PSN", base.DEC),
}
ext.fields = pf

local ef = {
    cut = ProtoExpert.new("fabriclab.cut", "fabriclab extension not captured whole",
        expert.group.UNDECODED, expert.severity.NOTE),
    short = ProtoExpert.new("fabriclab.short", "fabriclab extension longer than the frame",
        expert.group.MALFORMED, expert.severity.ERROR),
    hops = ProtoExpert.new("fabriclab.int.hops_exceed", "INT hops exceed max_hops",
        expert.group.PROTOCOL, expert.severity.WARN),
}
ext.experts = ef

local f_udp_srcport = Field.new("udp.srcport")
local f_udp_dstport = Field.new("udp.dstport")
local f_udp_length = Field.new("udp.length")
local f_udp_payload = Field.new("udp.payload")

-- Whether t (a UDP payload of rep bytes on the wire) holds bytes [off, off + len): true if
-- captured; else an expert item on tree (cut by the capture's snaplen, or a frame really too
-- short) and false.
local function captured(t, rep, off, len, tree, what)
    if off + len <= t:len() then
        return true
    end
    if off + len <= rep then
        tree:add_proto_expert_info(ef.cut, string.format(
            "%s: %d bytes at UDP payload offset %d, only %d bytes captured (snaplen)",
            what, len, off, t:len()))
    else
        tree:add_proto_expert_info(ef.short, string.format(
            "%s: %d bytes at UDP payload offset %d, but the payload has %d bytes",
            what, len, off, rep))
    end
    return false
end

-- The INT area at off: returns the offset after it (nil if not captured), and Info text.
local function dissect_int(t, rep, off, tree)
    if not captured(t, rep, off, INT_HEADER_LEN, tree, "INT header") then
        return nil
    end
    local hops, max_hops = t(off, 1):uint(), t(off + 1, 1):uint()
    local area_len = INT_HEADER_LEN + max_hops * INT_RECORD_LEN
    local st = tree:add(pf.int, t(off, math.min(area_len, t:len() - off)))
    st:append_text(string.format(": %d of %d hops", hops, max_hops))
    st:add(pf.int_hops, t(off, 1))
    local mh = st:add(pf.int_max_hops, t(off + 1, 1))
    st:add(pf.int_reserved, t(off + 2, 2))
    local n = hops
    if hops > max_hops then
        mh:add_proto_expert_info(ef.hops, string.format(
            "hops %d > max_hops %d: only %d records have room", hops, max_hops, max_hops))
        n = max_hops
    end
    local info = string.format("INT %d/%d", hops, max_hops)
    for i = 1, n do
        local r = off + INT_HEADER_LEN + (i - 1) * INT_RECORD_LEN
        if not captured(t, rep, r, INT_RECORD_LEN, st, string.format("INT record %d", i)) then
            return nil, info
        end
        local rt = st:add(pf.int_record, t(r, INT_RECORD_LEN))
        rt:append_text(string.format(" %d: ts %s ns, tx %d B, qlen %d B, rate %d kbit/s", i,
            tostring(t(r, 8):uint64()), t(r + 8, 4):uint(), t(r + 12, 4):uint(),
            t(r + 16, 4):uint()))
        rt:add(pf.int_ts_ns, t(r, 8))
        rt:add(pf.int_tx_bytes, t(r + 8, 4))
        rt:add(pf.int_qlen_bytes, t(r + 12, 4))
        rt:add(pf.int_rate_kbps, t(r + 16, 4))
    end
    local unused = (max_hops - n) * INT_RECORD_LEN
    local u = off + INT_HEADER_LEN + n * INT_RECORD_LEN
    if unused > 0 then
        if not captured(t, rep, u, unused, st, "INT unused room") then
            return nil, info
        end
        st:add(pf.int_unused, t(u, unused))
    end
    return off + area_len, info
end

local function dissect_tag(t, rep, off, tree)
    if not captured(t, rep, off, GSE_TAG_LEN, tree, "GSE container tag") then
        return nil
    end
    local src, dst = t(off, 2):uint(), t(off + 2, 2):uint()
    local seq, index = t(off + 4, 4):uint(), t(off + 8, 2):uint()
    local last, path = has_bit(t(off + 10, 1):uint(), 0x01), t(off + 11, 1):uint()
    local st = tree:add(pf.tag, t(off, GSE_TAG_LEN))
    st:append_text(string.format(": GSP %d -> port %d, container %d, index %d%s, path %d",
        src, dst, seq, index, last and " (last)" or "", path))
    st:add(pf.tag_src_gsp, t(off, 2))
    st:add(pf.tag_dst_port, t(off + 2, 2))
    st:add(pf.tag_seq, t(off + 4, 4))
    st:add(pf.tag_index, t(off + 8, 2))
    local fl = st:add(pf.tag_flags, t(off + 10, 1))
    fl:add(pf.tag_last, t(off + 10, 1))
    st:add(pf.tag_path, t(off + 11, 1))
    return off + GSE_TAG_LEN, string.format("GSE seq=%d idx=%d%s path=%d", seq, index,
        last and " last" or "", path)
end

local function dissect_sack(t, rep, off, tree)
    if not captured(t, rep, off, SACK_LEN, tree, "SACK") then
        return nil
    end
    local psn = t(off + 1, 3):uint()
    local st = tree:add(pf.sack, t(off, SACK_LEN))
    st:append_text(string.format(": PSN %d", psn))
    st:add(pf.sack_reserved, t(off, 1))
    st:add(pf.sack_psn, t(off + 1, 3))
    return off + SACK_LEN, string.format("SACK %d", psn)
end

-- The extensions each opcode may carry, in their order on the wire, and where they start
-- (fabriclab/wire/layers.py's _CHAINS).
local CHAINS = {
    [OP_SEND_ONLY] = { start = BTH_LEN,
        { INT_FLAG, dissect_int }, { GSE_FLAG, dissect_tag } },
    [OP_ACK] = { start = BTH_LEN + AETH_LEN,
        { SACK_FLAG, dissect_sack }, { INT_FLAG, dissect_int } },
}

-- One UDP payload t of a RoCEv2 frame, rep bytes long on the wire.
local function dissect_roce(t, rep, pinfo, root)
    if t:len() < BTH_LEN then
        return
    end
    local chain = CHAINS[t(0, 1):uint()]
    if chain == nil then
        return
    end
    local flags = t(8, 1):uint()
    local flagged = false
    for _, step in ipairs(chain) do
        flagged = flagged or has_bit(flags, step[1])
    end
    if not flagged then
        return -- a plain frame: the InfiniBand dissector says everything
    end
    local tree = root:add(ext, t(8, 1))
    local fi = tree:add(pf.flags, t(8, 1))
    fi:add(pf.flag_int, t(8, 1))
    fi:add(pf.flag_gse, t(8, 1))
    fi:add(pf.flag_sack, t(8, 1))
    local off, infos = chain.start, {}
    for _, step in ipairs(chain) do
        if has_bit(flags, step[1]) then
            local nxt, info = step[2](t, rep, off, tree)
            infos[#infos + 1] = info
            if nxt == nil then
                off = nil
                break
            end
            off = nxt
        end
    end
    if off ~= nil then
        tree:set_len(off - 8)
        if off + ICRC_LEN > rep then
            tree:add_proto_expert_info(ef.short, string.format(
                "extensions end at %d, no room for the ICRC in %d bytes", off, rep))
        end
    else
        tree:set_len(t:len() - 8)
    end
    if #infos > 0 then
        tree:append_text(": " .. table.concat(infos, ", "))
        local sep = tostring(pinfo.cols.info):match("%s$") and "" or " "
        pinfo.cols.info:append(sep .. "[" .. table.concat(infos, "] [") .. "]")
    end
end

-- The field among fields (FieldInfos of one kind) at offset off of the same frame.
local function field_at(fields, off)
    for _, f in ipairs(fields) do
        if f.offset == off then
            return f.value
        end
    end
    return nil
end

function ext.dissector(tvb, pinfo, tree)
    local payloads = { f_udp_payload() }
    if #payloads == 0 then
        return
    end
    local srcs, dsts, lens = { f_udp_srcport() }, { f_udp_dstport() }, { f_udp_length() }
    -- each UDP header (there may be more than one, e.g. one quoted in an ICMP error):
    -- source port, destination port, length, checksum, then the payload (captured: p.len)
    for _, p in ipairs(payloads) do
        local udp_len = field_at(lens, p.offset - 4)
        if (field_at(srcs, p.offset - 8) == ROCE_PORT or field_at(dsts, p.offset - 6) == ROCE_PORT)
            and udp_len ~= nil and p.len > 0 then
            dissect_roce(p.range:tvb(), math.max(udp_len - 8, p.len), pinfo, tree)
        end
    end
end

register_postdissector(ext)

------------------------------------------------------------------------------------------
-- GSE REQUEST and GRANT (UDP 4792 and 4793)
------------------------------------------------------------------------------------------

local gse = Proto("fabriclab.gse", "fabriclab GSE control")

local gf = {
    type = ProtoField.uint8("fabriclab.gse.type", "Type", base.DEC,
        { [GSE_REQUEST] = "REQUEST", [GSE_GRANT] = "GRANT" }),

    request = ProtoField.none("fabriclab.gse.request", "GSE REQUEST",
        "A GSP asks for one grant per size towards a destination port (none: a probe)"),
    req_n = ProtoField.uint8("fabriclab.gse.request.n", "Number of sizes", base.DEC),
    req_src_gsp = ProtoField.uint16("fabriclab.gse.request.src_gsp", "Source GSP", base.DEC),
    req_dst_port = ProtoField.uint16("fabriclab.gse.request.dst_port", "Destination port",
        base.DEC),
    req_reserved = ProtoField.uint16("fabriclab.gse.request.reserved", "Reserved", base.HEX),
    req_size = ProtoField.uint32("fabriclab.gse.request.size", "Size (bytes)", base.DEC, nil,
        nil, "Payload bytes one grant is asked for"),

    grant = ProtoField.none("fabriclab.gse.grant", "GSE GRANT",
        "Credit for a GSP towards a destination port (0 bytes: GSOS's receipt)"),
    grant_path = ProtoField.uint8("fabriclab.gse.grant.path", "Path", base.DEC,
        { [NO_PATH] = "none (the GSP sprays)" }),
    grant_src_gsp = ProtoField.uint16("fabriclab.gse.grant.src_gsp", "Source GSP (grantee)",
        base.DEC),
    grant_dst_port = ProtoField.uint16("fabriclab.gse.grant.dst_port", "Destination port",
        base.DEC),
    grant_flags = ProtoField.uint16("fabriclab.gse.grant.flags", "Flags", base.HEX),
    grant_idle = ProtoField.bool("fabriclab.gse.grant.flags.idle",
        "Idle (no other source was waiting for the port)", 16, nil, 0x0001),
    grant_nbytes = ProtoField.uint32("fabriclab.gse.grant.nbytes", "Granted bytes", base.DEC),
}
gse.fields = gf

local gse_cut = ProtoExpert.new("fabriclab.gse.cut", "GSE datagram not captured whole",
    expert.group.UNDECODED, expert.severity.NOTE)
gse.experts = { gse_cut }

function gse.dissector(tvb, pinfo, tree)
    local n, reported = tvb:len(), tvb:reported_len()
    if n < GSE_CONTROL_LEN then
        return 0
    end
    local typ, b1 = tvb(0, 1):uint(), tvb(1, 1):uint()
    local len
    if typ == GSE_REQUEST then
        len = GSE_CONTROL_LEN + 4 * b1
    elseif typ == GSE_GRANT then
        len = GSE_CONTROL_LEN + 4
    else
        return 0 -- not GSE: let UDP hand it to the next candidate
    end
    if reported < len then
        return 0
    end
    local src, dst = tvb(2, 2):uint(), tvb(4, 2):uint()
    pinfo.cols.protocol = "GSE"
    local top = tree:add(gse, tvb(0, math.min(len, n)))
    top:add(gf.type, tvb(0, 1))
    if typ == GSE_REQUEST then
        local sizes = {}
        local st = top:add(gf.request, tvb(1, math.min(len, n) - 1))
        st:add(gf.req_n, tvb(1, 1))
        st:add(gf.req_src_gsp, tvb(2, 2))
        st:add(gf.req_dst_port, tvb(4, 2))
        st:add(gf.req_reserved, tvb(6, 2))
        for i = 0, b1 - 1 do
            local o = GSE_CONTROL_LEN + 4 * i
            if o + 4 > n then
                st:add_proto_expert_info(gse_cut, string.format(
                    "%d of %d sizes captured", i, b1))
                break
            end
            st:add(gf.req_size, tvb(o, 4))
            sizes[#sizes + 1] = tostring(tvb(o, 4):uint())
        end
        local what = b1 == 0 and "probe" or (b1 .. " size" .. (b1 == 1 and "" or "s") ..
            ": " .. table.concat(sizes, ", "))
        st:append_text(string.format(": GSP %d -> port %d, %s", src, dst, what))
        top:append_text(", REQUEST")
        pinfo.cols.info = string.format("GSE REQUEST GSP %d -> port %d, %s", src, dst, what)
    else
        if len > n then
            top:add_proto_expert_info(gse_cut, "GRANT not captured whole")
            return n
        end
        local path, nbytes = b1, tvb(8, 4):uint()
        local st = top:add(gf.grant, tvb(1, len - 1))
        st:add(gf.grant_path, tvb(1, 1))
        st:add(gf.grant_src_gsp, tvb(2, 2))
        st:add(gf.grant_dst_port, tvb(4, 2))
        local fl = st:add(gf.grant_flags, tvb(6, 2))
        fl:add(gf.grant_idle, tvb(6, 2))
        st:add(gf.grant_nbytes, tvb(8, 4))
        local where = path == NO_PATH and "no path" or ("path " .. path)
        if tvb(6, 2):bitfield(15, 1) == 1 then
            where = where .. ", idle"
        end
        local what = nbytes == 0 and "receipt (0 bytes)" or (nbytes .. " bytes")
        st:append_text(string.format(": GSP %d -> port %d, %s, %s", src, dst, what, where))
        top:append_text(", GRANT")
        pinfo.cols.info = string.format("GSE GRANT GSP %d -> port %d, %s, %s", src, dst, what,
            where)
    end
    return math.min(len, n)
end

local udp_port = DissectorTable.get("udp.port")
udp_port:add(GSE_PORT, gse)
udp_port:add(GSE_EGRESS_PORT, gse)
