import Foundation

/// The kernel's table of IPv4 TCP sockets (Linux `/proc/net/tcp`), for the server's side of a
/// loopback connection: a client that is not reading cannot see the server close (the FIN waits
/// behind the data it has not read), the kernel can.
enum TCPTable {
    /// The state (`ESTABLISHED`, `FIN_WAIT1`, …) of the socket on 127.0.0.1:`localPort` connected
    /// to 127.0.0.1:`remotePort`; `nil` when there is none.
    static func state(localPort: Int, remotePort: Int) throws -> String? {
        try row(localPort: localPort, remotePort: remotePort).map { names[String($0[3])] ?? String($0[3]) }
    }

    /// The bytes that arrived on the socket on 127.0.0.1:`localPort` from 127.0.0.1:`remotePort`
    /// and that its owner has not read yet; `nil` when there is no such socket.
    static func receiveQueue(localPort: Int, remotePort: Int) throws -> Int? {
        // tx_queue:rx_queue, in hex
        try row(localPort: localPort, remotePort: remotePort).flatMap { $0[4].split(separator: ":").last.flatMap { Int($0, radix: 16) } }
    }

    /// The sockets on 127.0.0.1:`localPort` that are open (`ESTABLISHED` or `CLOSE_WAIT`).
    static func openSockets(localPort: Int) throws -> Int {
        try rows().filter { port($0[1]) == localPort && isOpen(names[String($0[3])]) }.count
    }

    private static func row(localPort: Int, remotePort: Int) throws -> [Substring]? {
        try rows().first { port($0[1]) == localPort && port($0[2]) == remotePort }
    }

    /// Every socket's fields: sl local_address rem_address st tx_queue:rx_queue …
    private static func rows() throws -> [[Substring]] {
        // Read to the end: a /proc file has no size for a plain read to go by.
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/net/tcp"))
        defer { try? file.close() }
        let table = String(decoding: try file.readToEnd() ?? Data(), as: UTF8.self)
        // Addresses as hex IP:port.
        return table.split(separator: "\n").dropFirst().map { $0.split(separator: " ") }.filter { $0.count > 4 }
    }

    /// True while the socket's owner has not closed it (the peer may have).
    static func isOpen(_ state: String?) -> Bool {
        state == "ESTABLISHED" || state == "CLOSE_WAIT"
    }

    private static func port(_ address: Substring) -> Int? {
        address.split(separator: ":").last.flatMap { Int($0, radix: 16) }
    }

    private static let names = [
        "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
        "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
    ]
}
