-- mod_lua peer of the benchmarks (r:wsupgrade / r:wsread / r:wswrite).
-- mod_lua's r:wsread returns only the payload (not the opcode) and r:wswrite writes text
-- frames, so /echo echoes as text; handle_binary (mapped to /echo-bin) frames binary
-- replies itself through r:wswrite's raw mode and serves the binary workloads.
function handle(r)
    if r:wsupgrade() then
        while true do
            local msg = r:wsread()
            if msg == nil then break end
            r:wswrite(msg)
        end
        r:wsclose()
    end
    return apache2.OK
end

local function binary_header(len)
    if len < 126 then
        return string.char(0x82, len)
    elseif len < 65536 then
        return string.char(0x82, 126, math.floor(len / 256), len % 256)
    end
    local b = {}
    for i = 7, 0, -1 do
        b[#b + 1] = math.floor(len / 2 ^ (8 * i)) % 256
    end
    return string.char(0x82, 127, (table.unpack or unpack)(b))
end

function handle_binary(r)
    if r:wsupgrade() then
        while true do
            local msg = r:wsread()
            if msg == nil then break end
            r:wswrite(binary_header(#msg) .. msg, true)
        end
        r:wsclose()
    end
    return apache2.OK
end
