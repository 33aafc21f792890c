// Test helper for tests/reference_handle.py (idnode's own code, no reference code in it).
//
// Creates one handle with the reference Java client library, authenticating
// with a secret key (HS_SECKEY) through the plain challenge-response exchange:
// no session is set up, so the server answers the create with a 402 challenge
// and the client answers it (OC 200) before the create is done.
//
// usage: java AdminCreate INDEX:ADMIN_HANDLE SECRET HANDLE TYPE=DATA...
//
// The handle gets the TYPE=DATA values at indexes 1..n plus HS_ADMIN at 100
// naming the identity. Messages are traced on stderr; stdout gets one line,
// "RESULT rc=<response code> <response>" (exit 0 when the code is 1, else 1).
// Where the server is comes from the client configuration folder
// (-Dnet.handle.configDir), as for any Handle client.

import java.nio.charset.StandardCharsets;

import net.handle.hdllib.AbstractMessage;
import net.handle.hdllib.AbstractResponse;
import net.handle.hdllib.AdminRecord;
import net.handle.hdllib.Common;
import net.handle.hdllib.CreateHandleRequest;
import net.handle.hdllib.Encoder;
import net.handle.hdllib.HandleException;
import net.handle.hdllib.HandleResolver;
import net.handle.hdllib.HandleValue;
import net.handle.hdllib.SecretKeyAuthenticationInfo;

public final class AdminCreate {
    private static final int ADMIN_INDEX = 100;

    private AdminCreate() {
    }

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    public static void main(String[] args) {
        if (args.length < 4) {
            System.err.println("usage: java AdminCreate INDEX:ADMIN_HANDLE SECRET HANDLE TYPE=DATA...");
            System.exit(2);
        }
        int colon = args[0].indexOf(':');
        if (colon <= 0) {
            System.err.println("identity must be INDEX:HANDLE, got " + args[0]);
            System.exit(2);
        }
        int adminIndex = Integer.parseInt(args[0].substring(0, colon));
        byte[] adminHandle = utf8(args[0].substring(colon + 1));
        String handle = args[2];

        int now = (int) (System.currentTimeMillis() / 1000L);
        HandleValue[] values = new HandleValue[args.length - 3 + 1];
        for (int i = 3; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("values are TYPE=DATA, got " + args[i]);
                System.exit(2);
            }
            values[i - 3] = new HandleValue(i - 2, utf8(args[i].substring(0, eq)),
                utf8(args[i].substring(eq + 1)));
            values[i - 3].setTimestamp(now);
        }
        AdminRecord admin = new AdminRecord(adminHandle, adminIndex,
            true, true, true, true, true, true, true, true, true, true, true, true);
        HandleValue adminValue = new HandleValue(ADMIN_INDEX, Common.ADMIN_TYPE, Encoder.encodeAdminRecord(admin));
        adminValue.setTimestamp(now);
        values[values.length - 1] = adminValue;

        HandleResolver resolver = new HandleResolver();
        // A new resolver sets up a session (OC 400) before any admin request; this helper
        // exercises the session-less exchange instead, as simple clients do.
        resolver.setSessionTracker(null);
        resolver.traceMessages = true;  // the tests read the OC 200 challenge answer from stderr
        SecretKeyAuthenticationInfo auth = new SecretKeyAuthenticationInfo(adminHandle, adminIndex, utf8(args[1]));
        int rc;
        String text;
        try {
            AbstractResponse response = resolver.processRequest(new CreateHandleRequest(utf8(handle), values, auth));
            rc = response.responseCode;
            text = response.toString();
        } catch (HandleException e) {
            // The client library turns some failures (e.g. an answer it cannot verify) into exceptions.
            rc = AbstractMessage.RC_ERROR;
            text = "Error(" + rc + "): " + e;
        }
        System.out.println("RESULT rc=" + rc + " " + text.replace('\n', ' '));
        System.exit(rc == AbstractMessage.RC_SUCCESS ? 0 : 1);
    }
}
