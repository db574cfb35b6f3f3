-- wrk script of the paygate-x402 target: every request pays for itself with
-- a fresh x402 v1 payment (a new nonce each time: paygate refuses a replay).
-- The bench facilitator (nginx) accepts every payment, so what is measured is
-- paygate's own work per paid call: decode, check, claim, verify and settle
-- round trips, holding the answer, the payment's usage event.

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local function digit(shift)
      local d = math.floor(n / 2 ^ shift) % 64
      return alphabet:sub(d + 1, d + 1)
    end
    out[#out + 1] = digit(18) .. digit(12) .. (b and digit(6) or "=") .. (c and digit(0) or "=")
  end
  return table.concat(out)
end

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local counter, prefix, template = 0, "", ""
function init(args)
  -- Unique across wrk runs (a new second) and threads (id).
  prefix = string.format("%012d%04d", os.time(), id or 0)
  local valid_before = os.time() + 3600
  template = '{"x402Version":1,"scheme":"exact","network":"base-sepolia","payload":{'
    .. '"signature":"0x' .. string.rep("ab", 65) .. '","authorization":{'
    .. '"from":"0x857b06519E91e3A54538791bDbb0E22373e36b66",'
    .. '"to":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","value":"17000",'
    .. '"validAfter":"0","validBefore":"' .. valid_before .. '","nonce":"0x%s"}}}'
end

function request()
  counter = counter + 1
  local nonce = prefix .. string.format("%048d", counter)
  local payment = b64(string.format(template, nonce))
  return wrk.format("GET", "/", { ["X-PAYMENT"] = payment })
end
