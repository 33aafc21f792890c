// Test helper for tests/reference_handle.py (idnode's own code, no reference code in it).
//
// Writes handle records straight into the BDB-JE store of a STOPPED reference
// Handle.Net server, so a test can start that server with known content and no
// network set-up (no admin session, no root).
//
// usage: java SeedStore SERVER_DIR PREFIX SECRET [HANDLE TYPE DATA]...
//
// Always writes PREFIX/ADMIN with HS_ADMIN at 100 and HS_SECKEY (SECRET, admin
// read/write only) at 300, and homes 0.NA/PREFIX. Each (HANDLE, TYPE, DATA)
// triple adds a value to HANDLE at indexes 1, 2, ... in argument order; every
// seeded HANDLE also gets HS_ADMIN at 100 naming 300:PREFIX/ADMIN. Handles are
// stored upper-cased because the test server runs with "case_sensitive" = "no",
// which makes it look records up by their upper-case spelling.

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

import net.cnri.util.StreamTable;
import net.handle.hdllib.AdminRecord;
import net.handle.hdllib.Common;
import net.handle.hdllib.Encoder;
import net.handle.hdllib.HandleValue;
import net.handle.server.bdbje.BDBJEHandleStorage;

public final class SeedStore {
    private static final int ADMIN_INDEX = 100;
    private static final int SECKEY_INDEX = 300;

    private SeedStore() {
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static byte[] storageKey(String handle) {
        return utf8(handle.toUpperCase(Locale.ROOT));
    }

    private static int now() {
        return (int) (System.currentTimeMillis() / 1000L);
    }

    /** HS_ADMIN granting every permission to SECKEY_INDEX:adminHandle. */
    private static HandleValue adminValue(String adminHandle) {
        AdminRecord admin = new AdminRecord(utf8(adminHandle), SECKEY_INDEX,
            true, true, true, true, true, true, true, true, true, true, true, true);
        HandleValue value = new HandleValue(ADMIN_INDEX, Common.ADMIN_TYPE,
            Encoder.encodeAdminRecord(admin));
        value.setTimestamp(now());
        return value;
    }

    /** Public-read value, as a freshly created Handle value is (rwr-). */
    private static HandleValue dataValue(int index, String type, String data) {
        HandleValue value = new HandleValue(index, utf8(type), utf8(data));
        value.setTimestamp(now());
        return value;
    }

    /** The secret itself, readable and writable by admins only (rw--). */
    private static HandleValue secretValue(String secret) {
        HandleValue value = new HandleValue(SECKEY_INDEX, Common.SECRET_KEY_TYPE, utf8(secret));
        value.setAnyoneCanRead(false);
        value.setAnyoneCanWrite(false);
        value.setAdminCanRead(true);
        value.setAdminCanWrite(true);
        value.setTimestamp(now());
        return value;
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3 || (args.length - 3) % 3 != 0) {
            System.err.println("usage: java SeedStore SERVER_DIR PREFIX SECRET [HANDLE TYPE DATA]...");
            System.exit(2);
        }
        String serverDir = args[0];
        String prefix = args[1];
        String secret = args[2];
        String adminHandle = prefix + "/ADMIN";

        // Insertion order keeps the value indexes in argument order.
        Map<String, List<HandleValue>> records = new LinkedHashMap<>();
        records.put(adminHandle, new ArrayList<>(List.of(adminValue(adminHandle), secretValue(secret))));
        for (int i = 3; i < args.length; i += 3) {
            List<HandleValue> values = records.computeIfAbsent(args[i], h -> new ArrayList<>());
            if (args[i].equalsIgnoreCase(adminHandle)) {
                throw new IllegalArgumentException(adminHandle + " is written by SeedStore itself");
            }
            values.add(dataValue(values.size() + 1, args[i + 1], args[i + 2]));
        }
        for (Map.Entry<String, List<HandleValue>> record : records.entrySet()) {
            if (!record.getKey().equals(adminHandle)) record.getValue().add(adminValue(adminHandle));
        }

        StreamTable config = new StreamTable();
        config.put("serverDir", serverDir);
        config.put("enable_recovery_log", false);
        BDBJEHandleStorage storage = new BDBJEHandleStorage();
        storage.init(config);
        try {
            storage.setHaveNA(storageKey("0.NA/" + prefix), true);
            for (Map.Entry<String, List<HandleValue>> record : records.entrySet()) {
                storage.createOrUpdateRecord(storageKey(record.getKey()),
                    record.getValue().toArray(new HandleValue[0]));
            }
            storage.checkpointDatabase();
        } finally {
            storage.shutdown();
        }
        System.out.println("seeded " + records.size() + " handles under " + prefix);
    }
}
